//! Reads a task's log after a given `seq`: from Redis when it holds the range, otherwise
//! (trimmed, flushed, down, or not yet fanned out) from Postgres, the log of record.

use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::streams::StreamRangeReply;
use shared::events::wire::Envelope;
use shared::ids::{TaskId, TenantId};
use shared::names;
use sqlx::PgPool;

/// How long a range read waits for Redis before reading Postgres instead.
const REDIS_PATIENCE: Duration = Duration::from_millis(250);

/// Reads log ranges.
#[derive(Clone)]
pub struct LogReader {
    pool: PgPool,
    redis: ConnectionManager,
}

/// Reading failed in both stores.
#[derive(Debug, thiserror::Error)]
#[error("postgres: {0}")]
pub struct Error(#[from] sqlx::Error);

impl LogReader {
    /// A reader over both stores.
    pub fn new(pool: PgPool, redis: ConnectionManager) -> Self {
        Self { pool, redis }
    }

    /// Up to `limit` events with `seq > after`, in order and without gaps; empty when the
    /// log has nothing after `after` yet.
    pub async fn read(
        &self,
        tenant: TenantId,
        task: TaskId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Envelope>, Error> {
        let from_redis = self.read_redis(tenant, task, after, limit).await;
        if !from_redis.is_empty() {
            return Ok(from_redis);
        }
        self.read_postgres(tenant, task, after, limit).await
    }

    /// The contiguous run starting at `after + 1` that Redis holds (maybe empty).
    async fn read_redis(
        &self,
        tenant: TenantId,
        task: TaskId,
        after: u64,
        limit: usize,
    ) -> Vec<Envelope> {
        let mut redis = self.redis.clone();
        let mut xrange = redis::cmd("XRANGE");
        xrange
            .arg(names::events_key(task))
            .arg(format!("({after}-0"))
            .arg("+")
            .arg("COUNT")
            .arg(limit);
        let query = xrange.query_async::<StreamRangeReply>(&mut redis);
        // Down or reconnecting: Postgres answers instead.
        let Ok(Ok(reply)) = tokio::time::timeout(REDIS_PATIENCE, query).await else {
            return Vec::new();
        };
        let mut run = Vec::with_capacity(reply.ids.len());
        let mut expected = after + 1;
        for entry in reply.ids {
            let event = entry
                .get::<String>("data")
                .and_then(|data| serde_json::from_str::<Envelope>(&data).ok());
            match event {
                Some(event) if event.seq == expected && event.tenant_id == tenant => {
                    expected += 1;
                    run.push(event);
                }
                _ => break,
            }
        }
        run
    }

    /// The same range from Postgres.
    pub async fn read_postgres(
        &self,
        tenant: TenantId,
        task: TaskId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Envelope>, Error> {
        let rows = sqlx::query(
            "SELECT task_id, tenant_id, seq, ts, kind, payload, hash_prev, hash_curr FROM task_events
             WHERE tenant_id = $1 AND task_id = $2 AND seq > $3 ORDER BY seq LIMIT $4",
        )
        .bind(tenant.0)
        .bind(task.0)
        .bind(i64::try_from(after).unwrap_or(i64::MAX))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(shared::db::envelope_from_row)
            .collect::<Result<_, _>>()?)
    }
}
