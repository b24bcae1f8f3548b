//! Postgres helpers used by several roles.

use serde_json::Value;
use sqlx::Row;
use sqlx::postgres::PgRow;

use crate::events::EventKind;
use crate::events::wire::Envelope;
use crate::ids::{TaskId, TenantId};

/// Reads an envelope from a row with the `task_events` columns
/// (task_id, tenant_id, seq, ts, kind, payload, hash_prev, hash_curr).
pub fn envelope_from_row(row: &PgRow) -> Result<Envelope, sqlx::Error> {
    let kind: String = row.try_get("kind")?;
    let kind = serde_json::from_value::<EventKind>(Value::String(kind))
        .map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
    Ok(Envelope {
        task_id: TaskId(row.try_get("task_id")?),
        tenant_id: TenantId(row.try_get("tenant_id")?),
        seq: u64::try_from(row.try_get::<i64, _>("seq")?).unwrap_or_default(),
        ts: row.try_get("ts")?,
        kind,
        payload: row.try_get("payload")?,
        hash_prev: row.try_get("hash_prev")?,
        hash_curr: row.try_get("hash_curr")?,
    })
}

/// Runs `listen` (a cache's `LISTEN` loop) until `shutdown`, again a second after each
/// time it ends; `forget` empties the cache meanwhile, so readers ask Postgres.
pub async fn keep_listening<F, Fut>(
    what: &str,
    shutdown: tokio_util::sync::CancellationToken,
    listen: F,
    forget: impl Fn(),
) where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<(), sqlx::Error>>,
{
    loop {
        tokio::select! {
            result = listen() => {
                forget();
                if let Err(e) = result {
                    tracing::warn!(error = %e, "{what} lost its listener; Postgres answers meanwhile");
                }
            }
            () = shutdown.cancelled() => return,
        }
        tokio::select! {
            () = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
            () = shutdown.cancelled() => return,
        }
    }
}
