//! Publishes signed tree heads to stream `AXON_HEADS` on `axon.loghead.{tenant_id}`
//! (`Nats-Msg-Id: {tenant_id}:{tree_size}`), so an auditor can keep every head it saw.
//! Heads are stored first (Postgres is the outbox): this publishes each stored head not
//! yet marked published, in tree order per tenant, after each signing and every few
//! seconds, so a head a crash or a NATS outage held back goes out later.

use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::Context;
use shared::audit::signed::{ALG, Head, SignedHead};
use shared::ids::TenantId;
use shared::names;
use sqlx::{PgPool, Row};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Heads published per round.
const ROUND: i64 = 500;
/// How often pending heads are looked for without a wake-up.
const POLL: Duration = Duration::from_secs(5);

/// Why a round failed.
#[derive(Debug, thiserror::Error)]
enum Error {
    #[error("postgres: {0}")]
    Db(#[from] sqlx::Error),
    #[error("nats: {0}")]
    Nats(String),
}

/// The publisher; [`HeadPublisher::wake`] after storing heads.
#[derive(Clone)]
pub struct HeadPublisher {
    pool: PgPool,
    js: Context,
    wake: Arc<Notify>,
}

impl HeadPublisher {
    /// A publisher of the heads in `pool` to `js`.
    pub fn new(pool: PgPool, js: Context) -> Self {
        Self {
            pool,
            js,
            wake: Arc::new(Notify::new()),
        }
    }

    /// Asks for a round now.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Publishes until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            match self.round().await {
                Ok(n) if n == ROUND as usize => continue,
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "publishing tree heads failed; retrying"),
            }
            tokio::select! {
                () = self.wake.notified() => {}
                () = tokio::time::sleep(POLL) => {}
                () = shutdown.cancelled() => return,
            }
        }
    }

    async fn round(&self) -> Result<usize, Error> {
        let rows = sqlx::query(
            "SELECT tenant_id, tree_size, root_hash, issued_at, key_id, signature FROM log_heads
             WHERE NOT published ORDER BY tenant_id, tree_size LIMIT $1",
        )
        .bind(ROUND)
        .fetch_all(&self.pool)
        .await?;
        let mut acks = Vec::with_capacity(rows.len());
        let (mut tenants, mut sizes) = (Vec::new(), Vec::new());
        for row in &rows {
            let tenant: Uuid = row.try_get("tenant_id")?;
            let size: i64 = row.try_get("tree_size")?;
            let head = SignedHead {
                head: Head {
                    tenant_id: TenantId(tenant),
                    tree_size: u64::try_from(size).unwrap_or_default(),
                    root_hash: row.try_get("root_hash")?,
                    issued_at: row.try_get("issued_at")?,
                    key_id: row.try_get("key_id")?,
                },
                alg: ALG.into(),
                signature: row.try_get("signature")?,
            };
            let mut headers = HeaderMap::new();
            headers.insert("Nats-Msg-Id", format!("{tenant}:{size}").as_str());
            let payload = serde_json::to_vec(&head).expect("heads serialize");
            let ack = self
                .js
                .publish_with_headers(
                    names::loghead_subject(TenantId(tenant)),
                    headers,
                    payload.into(),
                )
                .await
                .map_err(|e| Error::Nats(e.to_string()))?;
            acks.push(ack);
            tenants.push(tenant);
            sizes.push(size);
        }
        for ack in acks {
            ack.await.map_err(|e| Error::Nats(e.to_string()))?;
        }
        sqlx::query(
            "UPDATE log_heads h SET published = true
             FROM UNNEST($1::uuid[], $2::bigint[]) AS k(tenant_id, tree_size)
             WHERE h.tenant_id = k.tenant_id AND h.tree_size = k.tree_size",
        )
        .bind(tenants)
        .bind(sizes)
        .execute(&self.pool)
        .await?;
        Ok(rows.len())
    }
}
