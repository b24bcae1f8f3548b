//! After a batch commits: append its events to Redis `events:{task_id}` (entry id
//! `{seq}-0`) and publish them to `AXON_LOG` (`Nats-Msg-Id: {task_id}:{seq}`). Both are
//! idempotent, so a batch is simply sent again after a failure. The fan-out runs beside
//! the projector's loop, so the next batch's transaction overlaps this one's fan-out; if it
//! falls behind (a full queue, Redis down), it catches up from Postgres.
//!
//! Failures are counted (`axon_fanout_failures_total`) and logged with the batch's tasks;
//! one that lasts raises a `/readyz` fault. An event a sink refuses for good (a Redis key
//! of the wrong type, a message NATS will never take) is found by sending the batch one
//! event at a time, logged, counted (`axon_fanout_dropped_total`) and skipped for that
//! sink: the log of record is Postgres, and every later event still goes out.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::Context;
use async_nats::jetstream::context::PublishErrorKind;
use redis::Script;
use redis::aio::ConnectionManager;
use shared::events::wire::Envelope;
use shared::faults::Faults;
use shared::ids::TenantId;
use shared::names;
use sqlx::PgPool;
use tokio::sync::mpsc;

use crate::store;

/// Whether Redis refused a command (or one of a pipeline's) for good: WRONGTYPE (the key
/// holds something else) or ERR (the command itself is wrong); not OOM, LOADING, READONLY
/// and the like, which pass.
fn refused_by_redis(error: &redis::RedisError) -> bool {
    let for_good = |code: &str| matches!(code, "WRONGTYPE" | "ERR");
    error.code().is_some_and(for_good)
        || error
            .clone()
            .into_server_errors()
            .is_some_and(|items| items.iter().any(|(_, e)| for_good(e.code())))
}

/// Passes a single event's result on, unless the sink refused it for good: then it is
/// logged, counted and skipped.
fn dropped(result: Result<(), Error>, event: &Envelope, sink: &str) -> Result<(), Error> {
    match result {
        Err(e) if e.is_permanent() => {
            metrics::counter!("axon_fanout_dropped_total").increment(1);
            tracing::error!(
                task_id = %event.task_id,
                seq = event.seq,
                sink,
                error = %e,
                "event refused for good; skipped there (it stays in Postgres)"
            );
            Ok(())
        }
        other => other,
    }
}

/// Appends each event (`KEYS[i]`, with `ARGV[4i-3..4i]`: entry id, kind, data, retention)
/// unless its stream already holds it; a terminal event's retention (not 0) is set on its
/// stream. One call for many events: a script run costs Redis far more than an `XADD`.
/// Stops at the first error other than an entry already held, and answers it.
const APPEND: &str = r"
for i = 1, #KEYS do
  local a = 4 * (i - 1)
  local ok = redis.pcall('XADD', KEYS[i], ARGV[a + 1], 'kind', ARGV[a + 2], 'data', ARGV[a + 3])
  if type(ok) == 'table' and ok.err then
    if not string.find(ok.err, 'equal or smaller', 1, true) then return ok end
  elseif ARGV[a + 4] ~= '0' then
    redis.call('EXPIRE', KEYS[i], ARGV[a + 4])
  end
end
return 1
";
/// Events per script call, so no call holds Redis up for long.
const APPEND_CHUNK: usize = 256;

const DAY: u64 = 24 * 3600;
/// AXON sequences re-sent per round when catching up from Postgres.
const CATCH_UP_CHUNK: u64 = 5000;
/// `AXON_LOG` acks awaited at once (async-nats allows 5,000 per client).
const LOG_ACKS: usize = 1000;
/// How long the fan-out may keep failing before `/readyz` says so.
const FAULT_AFTER: Duration = Duration::from_secs(10);
/// The component name of the fan-out's fault.
const FAULT: &str = "fanout";

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
    /// NATS refused a message for good.
    #[error("nats refused the message: {0}")]
    NatsRefused(String),
    /// Postgres failed (plan lookup).
    #[error("postgres: {0}")]
    Db(#[from] sqlx::Error),
    /// Postgres failed (catch-up read).
    #[error(transparent)]
    Store(#[from] store::Error),
}

impl Error {
    /// Whether sending the same event again would fail again: Redis refusing the command
    /// itself (a key of another type), or NATS refusing the message (too large).
    fn is_permanent(&self) -> bool {
        match self {
            Self::Redis(e) => refused_by_redis(e),
            Self::NatsRefused(_) => true,
            _ => false,
        }
    }
}

/// Sends committed events on to Redis and `AXON_LOG`.
#[derive(Clone)]
pub struct Fanout {
    redis: ConnectionManager,
    append: Arc<Script>,
    js: Context,
    pool: PgPool,
    retention: HashMap<TenantId, u64>,
    faults: Faults,
}

impl Fanout {
    /// A fan-out over connected backends; a lasting failure is raised in `faults`.
    pub fn new(redis: ConnectionManager, js: Context, pool: PgPool, faults: Faults) -> Self {
        Self {
            redis,
            append: Arc::new(Script::new(APPEND)),
            js,
            pool,
            retention: HashMap::new(),
            faults,
        }
    }

    /// Delivers jobs until the queue closes, each until it succeeds; `fanned` tells the
    /// projector the last AXON sequence that is fully fanned out.
    pub async fn run(mut self, mut jobs: mpsc::Receiver<Job>, fanned: Arc<AtomicU64>) {
        while let Some(job) = jobs.recv().await {
            let mut backoff = Duration::from_millis(100);
            let mut failing_since = None;
            while let Err(e) = self.deliver(&job, &fanned).await {
                metrics::counter!("axon_fanout_failures_total").increment(1);
                let tasks: Vec<String> = job.events.iter().map(|e| e.task_id.to_string()).collect();
                tracing::warn!(error = %e, tasks = ?tasks, upto = job.upto, "fan-out failed; retrying");
                let since = *failing_since.get_or_insert_with(tokio::time::Instant::now);
                if since.elapsed() >= FAULT_AFTER {
                    self.faults.raise(
                        FAULT,
                        format!(
                            "events are not reaching Redis or AXON_LOG for {} s ({e}); they are safe in Postgres and go out once it works",
                            since.elapsed().as_secs()
                        ),
                    );
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
            if failing_since.is_some() {
                self.faults.clear(FAULT);
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

    /// Sends `events` (in log order) to Redis and to `AXON_LOG`; a sink that refuses the
    /// batch for good gets it one event at a time, so only the refused events are dropped.
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
        match redis {
            Err(e) if e.is_permanent() => {
                for (event, ttl) in events.iter().zip(&ttls) {
                    let one = self
                        .append_redis(std::slice::from_ref(event), &[*ttl])
                        .await;
                    dropped(one, event, "redis")?;
                }
            }
            other => other?,
        }
        match log {
            Err(e) if e.is_permanent() => {
                for event in events {
                    dropped(
                        self.publish_log(std::slice::from_ref(event)).await,
                        event,
                        "AXON_LOG",
                    )?;
                }
                Ok(())
            }
            other => other,
        }
    }

    async fn append_redis(&self, events: &[Envelope], ttls: &[u64]) -> Result<(), Error> {
        // One chunk after the other: entries of one stream must arrive in order.
        for (events, ttls) in events.chunks(APPEND_CHUNK).zip(ttls.chunks(APPEND_CHUNK)) {
            let mut call = self.append.prepare_invoke();
            for (event, ttl) in events.iter().zip(ttls) {
                let data = serde_json::to_string(event).expect("envelopes always serialize");
                call.key(names::events_key(event.task_id))
                    .arg(format!("{}-0", event.seq))
                    .arg(event.kind.as_str())
                    .arg(data)
                    .arg(ttl);
            }
            call.invoke_async::<()>(&mut self.redis.clone()).await?;
        }
        Ok(())
    }

    async fn publish_log(&self, events: &[Envelope]) -> Result<(), Error> {
        for window in events.chunks(LOG_ACKS) {
            let mut acks = Vec::with_capacity(window.len());
            for event in window {
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
                    .map_err(|e| match e.kind() {
                        PublishErrorKind::MaxPayloadExceeded => Error::NatsRefused(e.to_string()),
                        _ => Error::Nats(e.to_string()),
                    })?;
                acks.push(ack);
            }
            for ack in acks {
                ack.await.map_err(|e| Error::Nats(e.to_string()))?;
            }
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
