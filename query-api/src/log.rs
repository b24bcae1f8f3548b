//! Reads a task's log after a given `seq`: from Redis when it holds the range, otherwise
//! (trimmed, flushed, down, or not yet fanned out) from Postgres, the log of record.

use std::sync::Arc;
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

/// A log event with its JSON, serialized once and shared by every client that sends it.
#[derive(Debug)]
pub struct Logged {
    /// The event.
    pub event: Envelope,
    /// `event` as JSON (the SSE `data`).
    pub json: String,
}

impl Logged {
    /// Wraps an event read from Postgres.
    pub fn new(event: Envelope) -> Arc<Self> {
        let json = serde_json::to_string(&event).expect("envelopes always serialize");
        Arc::new(Self { event, json })
    }

    /// Parses the `data` of a Redis entry.
    pub fn parse(json: String) -> Option<Arc<Self>> {
        let event = serde_json::from_str(&json).ok()?;
        Some(Arc::new(Self { event, json }))
    }
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
    ) -> Result<Vec<Arc<Logged>>, Error> {
        let from_redis = self.read_redis(tenant, task, after, limit).await;
        if !from_redis.is_empty() {
            return Ok(from_redis);
        }
        let from_postgres = self.read_postgres(tenant, task, after, limit).await?;
        Ok(from_postgres.into_iter().map(Logged::new).collect())
    }

    /// The contiguous run starting at `after + 1` that Redis holds (maybe empty).
    async fn read_redis(
        &self,
        tenant: TenantId,
        task: TaskId,
        after: u64,
        limit: usize,
    ) -> Vec<Arc<Logged>> {
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
            match entry.get::<String>("data").and_then(Logged::parse) {
                Some(logged)
                    if logged.event.seq == expected && logged.event.tenant_id == tenant =>
                {
                    expected += 1;
                    run.push(logged);
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
