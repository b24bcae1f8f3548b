//! After a batch commits: append its events to Redis `events:{task_id}` (entry id
//! `{seq}-0`) and publish them to `AXON_LOG` (`Nats-Msg-Id: {task_id}:{seq}`). Both are
//! idempotent, so a batch is simply sent again after any failure. The fan-out runs beside
//! the projector's loop, so the next batch's transaction overlaps this one's fan-out; if it
//! falls behind (a full queue, Redis down), it catches up from Postgres.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::Context;
use redis::aio::ConnectionManager;
use shared::events::wire::Envelope;
use shared::ids::TenantId;
use shared::names;
use sqlx::PgPool;
use tokio::sync::mpsc;

use crate::store;

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
/// AXON sequences re-sent per round when catching up from Postgres.
const CATCH_UP_CHUNK: u64 = 5000;

/// A committed batch: the events of AXON sequences `(after, upto]`.
#[derive(Debug)]
pub struct Job {
    /// The applied offset before the batch.
    pub after: u64,
    /// The applied offset after the batch.
    pub upto: u64,
    /// The batch's events, in log order.
    pub events: Vec<Envelope>,
}

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
    /// Postgres failed (catch-up read).
    #[error(transparent)]
    Store(#[from] store::Error),
}

/// Sends committed events on to Redis and `AXON_LOG`.
#[derive(Clone)]
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

    /// Delivers jobs until the queue closes, each until it succeeds; `fanned` tells the
    /// projector the last AXON sequence that is fully fanned out.
    pub async fn run(mut self, mut jobs: mpsc::Receiver<Job>, fanned: Arc<AtomicU64>) {
        while let Some(job) = jobs.recv().await {
            let mut backoff = Duration::from_millis(100);
            while let Err(e) = self.deliver(&job, &fanned).await {
                tracing::warn!(error = %e, "fan-out failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
            fanned.store(job.upto, Ordering::Release);
        }
    }

    /// Catches up from Postgres to where `job` starts (jobs dropped on a full queue), then
    /// sends `job`.
    async fn deliver(&mut self, job: &Job, fanned: &AtomicU64) -> Result<(), Error> {
        let mut from = fanned.load(Ordering::Acquire);
        if from < job.after {
            tracing::info!(from, to = job.after, "fan-out catching up from Postgres");
        }
        while from < job.after {
            let upto = job.after.min(from + CATCH_UP_CHUNK);
            let events = store::events_between(&self.pool, from, upto).await?;
            self.send(&events).await?;
            fanned.store(upto, Ordering::Release);
            from = upto;
        }
        self.send(&job.events).await
    }

    /// Sends `events` (in log order) to Redis and to `AXON_LOG`.
    async fn send(&mut self, events: &[Envelope]) -> Result<(), Error> {
        if events.is_empty() {
            return Ok(());
        }
        let mut ttls = Vec::with_capacity(events.len());
        for event in events {
            ttls.push(if event.kind.is_terminal() {
                self.retention_secs(event.tenant_id).await?
            } else {
                0
            });
        }
        let (redis, log) = tokio::join!(self.append_redis(events, &ttls), self.publish_log(events));
        redis.and(log)
    }

    async fn append_redis(&self, events: &[Envelope], ttls: &[u64]) -> Result<(), Error> {
        let mut pipe = redis::pipe();
        for (event, ttl) in events.iter().zip(ttls) {
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
        pipe.query_async::<()>(&mut self.redis.clone()).await?;
        Ok(())
    }

    async fn publish_log(&self, events: &[Envelope]) -> Result<(), Error> {
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
