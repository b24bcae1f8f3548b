//! After a batch commits: append its events to Redis `events:{task_id}` (entry id
//! `{seq}-0`) and publish them to `AXON_LOG` (`Nats-Msg-Id: {task_id}:{seq}`). Both are
//! idempotent, so a batch is simply sent again after any failure.

use std::collections::HashMap;

use async_nats::HeaderMap;
use async_nats::jetstream::Context;
use redis::aio::ConnectionManager;
use shared::events::wire::Envelope;
use shared::ids::TenantId;
use shared::names;
use sqlx::PgPool;

/// Appends one entry unless the stream already holds it (then returns 0); on a terminal
/// event, sets the stream's retention.
const APPEND: &str = r"
local ok = redis.pcall('XADD', KEYS[1], ARGV[1], 'kind', ARGV[2], 'data', ARGV[3])
if type(ok) == 'table' and ok.err then
  if string.find(ok.err, 'equal or smaller', 1, true) then return 0 end
  return ok
end
if ARGV[4] ~= '0' then redis.call('EXPIRE', KEYS[1], ARGV[4]) end
return 1
";

const DAY: u64 = 24 * 3600;

/// A fan-out failure; the batch is sent again.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Redis failed.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// NATS failed.
    #[error("nats: {0}")]
    Nats(String),
    /// Postgres failed (plan lookup).
    #[error("postgres: {0}")]
    Db(#[from] sqlx::Error),
}

/// Sends committed events on to Redis and `AXON_LOG`.
pub struct Fanout {
    redis: ConnectionManager,
    js: Context,
    pool: PgPool,
    retention: HashMap<TenantId, u64>,
}

impl Fanout {
    /// A fan-out over connected backends.
    pub fn new(redis: ConnectionManager, js: Context, pool: PgPool) -> Self {
        Self {
            redis,
            js,
            pool,
            retention: HashMap::new(),
        }
    }

    /// Sends `events` (in log order) to Redis, then to `AXON_LOG`.
    pub async fn send(&mut self, events: &[Envelope]) -> Result<(), Error> {
        if events.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for event in events {
            let ttl = if event.kind.is_terminal() {
                self.retention_secs(event.tenant_id).await?
            } else {
                0
            };
            let data = serde_json::to_string(event).expect("envelopes always serialize");
            pipe.cmd("EVAL")
                .arg(APPEND)
                .arg(1)
                .arg(names::events_key(event.task_id))
                .arg(format!("{}-0", event.seq))
                .arg(event.kind.as_str())
                .arg(data)
                .arg(ttl)
                .ignore();
        }
        pipe.query_async::<()>(&mut self.redis).await?;

        let mut acks = Vec::with_capacity(events.len());
        for event in events {
            let mut headers = HeaderMap::new();
            headers.insert(
                "Nats-Msg-Id",
                names::log_msg_id(event.task_id, event.seq).as_str(),
            );
            let payload = serde_json::to_vec(event).expect("envelopes always serialize");
            let subject = names::log_subject(event.tenant_id, event.task_id, event.kind);
            let ack = self
                .js
                .publish_with_headers(subject, headers, payload.into())
                .await
                .map_err(|e| Error::Nats(e.to_string()))?;
            acks.push(ack);
        }
        for ack in acks {
            ack.await.map_err(|e| Error::Nats(e.to_string()))?;
        }
        Ok(())
    }

    /// How long a finished task's Redis stream is kept: by the tenant's plan (§3.5).
    async fn retention_secs(&mut self, tenant: TenantId) -> Result<u64, Error> {
        if let Some(secs) = self.retention.get(&tenant) {
            return Ok(*secs);
        }
        let plan: Option<(String,)> =
            sqlx::query_as("SELECT plan FROM tenants WHERE tenant_id = $1")
                .bind(tenant.0)
                .fetch_optional(&self.pool)
                .await?;
        let days = match plan.as_ref().map(|(p,)| p.as_str()) {
            Some("trial") => 1,
            Some("pro") => 30,
            Some("enterprise") => 90,
            _ => 7,
        };
        self.retention.insert(tenant, days * DAY);
        Ok(days * DAY)
    }
}
