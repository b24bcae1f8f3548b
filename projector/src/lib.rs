//! projector: the single writer of the task log. It consumes stream `AXON` in order
//! (an ordered consumer starting after its offset in Postgres), turns commands and worker
//! events into chained log events through the task aggregate, and writes each batch —
//! `task_events`, `tasks` and its offset — in one transaction, so a redelivered message is
//! never logged twice. After the commit it hands the events to the fan-out (Redis and
//! `AXON_LOG`), which runs beside it; if that falls behind or fails, projecting goes on
//! and the fan-out catches up from Postgres later. Each terminal event gets a signed
//! receipt, a leaf in its tenant's log, in the same transaction; signed tree heads follow
//! (at most one a second per tenant) and go out on `AXON_HEADS`.
//!
//! Entry points: [`Projector::create`], then [`Projector::run`].

mod decode;
mod fanout;
mod heads;
mod identity;
mod projection;
mod store;
mod transparency;

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::consumer::pull::{Ordered, OrderedConfig};
use async_nats::jetstream::stream::Stream;
use async_nats::jetstream::{Context, Message};
use futures::{FutureExt, StreamExt};
use redis::aio::ConnectionManager;
use shared::audit::signer::Signer;
use shared::faults::Faults;
use shared::ids::TaskId;
use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::fanout::{Fanout, Job};
use crate::heads::HeadPublisher;
use crate::projection::Projection;
use crate::store::Offsets;
use crate::transparency::{Staged, TenantLogs};

/// Most AXON messages in one transaction.
const MAX_BATCH: usize = 1000;
/// Committed batches waiting for the fan-out; when full, later ones are caught up from Postgres.
const FANOUT_QUEUE: usize = 64;
/// Pause between retries after a failure.
const RETRY: Duration = Duration::from_secs(1);
/// How long the fan-out may take to drain at shutdown.
const DRAIN: Duration = Duration::from_secs(5);

/// Why a projector run stopped (it restarts from its Postgres offset).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Postgres failed or another projector moved the offset.
    #[error(transparent)]
    Store(#[from] store::Error),
    /// NATS failed.
    #[error("nats: {0}")]
    Nats(String),
    /// Stream AXON is not the stream the offset belongs to (what to do is in the text).
    #[error("{0}")]
    Stream(String),
}

fn nats(e: impl std::fmt::Display) -> Error {
    Error::Nats(e.to_string())
}

/// The projector role.
pub struct Projector {
    pool: PgPool,
    axon: Stream,
    fanout: Fanout,
    cache: HashMap<TaskId, Projection>,
    offsets: Offsets,
    fanned: Arc<AtomicU64>,
    /// Up to this AXON sequence, batches hold one message, so a message Postgres refuses
    /// for good is found and skipped instead of stalling every task behind it.
    careful_until: u64,
    /// Where a halt shows (`/readyz`).
    faults: Faults,
    /// The creation time of the stream the offset belongs to.
    stream_created: Option<String>,
    /// Receipts and tenant logs.
    logs: TenantLogs,
    /// Sends stored heads to `AXON_HEADS`.
    heads: HeadPublisher,
}

/// The component name of the projector's faults.
const FAULT: &str = "projector";
/// How often an idle projector checks that stream AXON is still the stream of its offset.
const STREAM_CHECK: Duration = Duration::from_secs(2);
/// How often a halted projector looks whether the operator fixed its stream.
const HALTED_RETRY: Duration = Duration::from_secs(5);

impl Projector {
    /// A projector over connected backends; `axon` is stream `AXON`; a halt is raised in
    /// `faults`; receipts and heads are signed with `signer`.
    pub fn create(
        pool: PgPool,
        js: Context,
        axon: Stream,
        redis: ConnectionManager,
        faults: Faults,
        signer: Signer,
    ) -> Self {
        Self {
            heads: HeadPublisher::new(pool.clone(), js.clone()),
            logs: TenantLogs::new(signer),
            fanout: Fanout::new(redis, js, pool.clone(), faults.clone()),
            pool,
            axon,
            cache: HashMap::new(),
            offsets: Offsets {
                applied: 0,
                fanned: 0,
            },
            fanned: Arc::new(AtomicU64::new(0)),
            careful_until: 0,
            faults,
            stream_created: None,
        }
    }

    /// Projects until `shutdown`; after a failure it restarts from its Postgres offset. If
    /// stream AXON is not the stream of its offset, it projects nothing, raises a fault
    /// saying what to do, and looks again now and then.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let publisher = tokio::spawn(self.heads.clone().run(shutdown.child_token()));
        self.run_projecting(&shutdown).await;
        publisher.abort();
    }

    async fn run_projecting(&mut self, shutdown: &CancellationToken) {
        let mut halted = None;
        loop {
            let pause = match self.run_once(shutdown).await {
                Ok(()) => return,
                Err(Error::Stream(problem))
                | Err(Error::Store(store::Error::MissingNodes(problem))) => {
                    if halted.as_ref() != Some(&problem) {
                        tracing::error!(%problem, "projector halted");
                        self.faults.raise(FAULT, problem.clone());
                        metrics::gauge!("axon_projector_halted").set(1.0);
                        halted = Some(problem);
                    }
                    HALTED_RETRY
                }
                Err(e) => {
                    tracing::warn!(error = %e, "projector restarts from its offset");
                    RETRY
                }
            };
            self.cache.clear();
            self.logs.forget();
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = shutdown.cancelled() => return,
            }
        }
    }

    /// Checks that stream AXON is the stream of the offset, recording it the first time.
    async fn check_stream(&mut self) -> Result<(), Error> {
        let recorded = store::stream_created(&self.pool).await?;
        let created = self.verify_stream(recorded.as_deref()).await?;
        if recorded.is_none() {
            store::record_stream(&self.pool, &created).await?;
        }
        self.stream_created = Some(created);
        self.faults.clear(FAULT);
        metrics::gauge!("axon_projector_halted").set(0.0);
        Ok(())
    }

    /// Stream AXON's creation time, if it is the stream of the offset (`recorded`).
    async fn verify_stream(&self, recorded: Option<&str>) -> Result<String, Error> {
        let info = self.axon.get_info().await.map_err(nats)?;
        let stream = identity::Stream {
            created: info.created.unix_timestamp_nanos().to_string(),
            first_seq: info.state.first_sequence,
            last_seq: info.state.last_sequence,
            messages: info.state.messages,
        };
        match identity::mismatch(recorded, &stream, self.offsets.applied) {
            Some(problem) => Err(Error::Stream(problem)),
            None => Ok(stream.created),
        }
    }

    async fn run_once(&mut self, shutdown: &CancellationToken) -> Result<(), Error> {
        self.offsets = store::offsets(&self.pool).await?;
        self.check_stream().await?;
        shared::audit::store::register_key(&self.pool, self.logs.signer().public())
            .await
            .map_err(store::Error::from)?;
        self.logs.find_unsigned(&self.pool).await?;
        self.fanned.store(self.offsets.fanned, Ordering::Release);
        let (jobs, queue) = mpsc::channel(FANOUT_QUEUE);
        let mut fanout = tokio::spawn(self.fanout.clone().run(queue, self.fanned.clone()));
        // An empty job at the offset makes the fan-out catch up what a crash left unsent.
        let applied = self.offsets.applied;
        let catch_up = Job {
            after: applied,
            upto: applied,
            events: Vec::new(),
        };
        jobs.try_send(catch_up).expect("a new queue has room");
        let result = self.consume(&jobs, shutdown).await;
        drop(jobs);
        if result.is_err() || tokio::time::timeout(DRAIN, &mut fanout).await.is_err() {
            fanout.abort();
        }
        result
    }

    /// Projects batches from an ordered consumer starting right after the offset.
    async fn consume(
        &mut self,
        jobs: &mpsc::Sender<Job>,
        shutdown: &CancellationToken,
    ) -> Result<(), Error> {
        let consumer = self
            .axon
            .create_consumer(OrderedConfig {
                deliver_policy: DeliverPolicy::ByStartSequence {
                    start_sequence: self.offsets.applied + 1,
                },
                ..Default::default()
            })
            .await
            .map_err(nats)?;
        let mut messages = consumer.messages().await.map_err(nats)?;
        let mut idle = tokio::time::interval_at(Instant::now() + STREAM_CHECK, STREAM_CHECK);
        // The consumer sequence the next message should have (the stream was checked
        // when this consumer was made).
        let mut next_delivery = 1;
        loop {
            let max = if self.offsets.applied < self.careful_until {
                1
            } else {
                MAX_BATCH
            };
            let due = self.logs.next_due();
            let next = next_batch(&mut messages, max, &mut idle, due, shutdown).await?;
            // The ordered consumer follows a recreated stream on its own, from the old
            // position (its consumer sequence starts over when it does): the stream is
            // checked then, and while idle.
            let recorded = self.stream_created.clone();
            match next {
                Next::Shutdown => return Ok(()),
                Next::HeadsDue => {
                    let started = std::time::Instant::now();
                    self.sign_due_heads().await?;
                    record_audit_time("heads", started);
                }
                Next::Idle => {
                    self.verify_stream(recorded.as_deref()).await?;
                }
                Next::Batch(batch) => {
                    let sequence = |m: Option<&Message>| {
                        m.and_then(|m| m.info().ok()).map(|i| i.consumer_sequence)
                    };
                    if sequence(batch.first()) != Some(next_delivery) {
                        self.verify_stream(recorded.as_deref()).await?;
                    }
                    next_delivery = sequence(batch.last()).map_or(1, |last| last + 1);
                    let started = std::time::Instant::now();
                    self.project(batch, jobs).await?;
                    metrics::histogram!("axon_projector_batch_seconds")
                        .record(started.elapsed().as_secs_f64());
                    idle.reset();
                }
            }
        }
    }

    async fn project(
        &mut self,
        messages: Vec<Message>,
        jobs: &mpsc::Sender<Job>,
    ) -> Result<(), Error> {
        let messages_len = messages.len();
        let mut inputs = Vec::with_capacity(messages.len());
        let mut last_seq = self.offsets.applied;
        let mut pending = 0;
        for message in &messages {
            let info = message.info().map_err(nats)?;
            last_seq = info.stream_sequence;
            pending = info.pending;
            inputs.push((
                info.stream_sequence,
                decode::decode(&message.subject, &message.payload),
            ));
        }
        self.load_missing(&inputs).await?;

        let mut batch = store::Batch::default();
        let mut touched = Vec::new();
        for (stream_seq, input) in inputs {
            let input = match input {
                Ok(input) => input,
                Err(poison) => {
                    tracing::error!(%poison, "skipping a message that cannot be projected");
                    metrics::counter!("axon_projector_poison_total").increment(1);
                    continue;
                }
            };
            let task_id = input.task_id;
            let projection = match self.cache.entry(task_id) {
                Entry::Occupied(entry) if entry.get().tenant_id == input.tenant_id => {
                    entry.into_mut()
                }
                Entry::Occupied(_) => {
                    tracing::error!(%task_id, "message names another tenant's task; skipped");
                    continue;
                }
                Entry::Vacant(entry) => match Projection::requested(&input) {
                    Some(projection) => entry.insert(projection),
                    None => {
                        tracing::debug!(%task_id, "message for a task never requested; skipped");
                        continue;
                    }
                },
            };
            match projection.apply(input).await {
                Ok(events) => {
                    batch
                        .events
                        .extend(events.into_iter().map(|e| (e, stream_seq)));
                    if !touched.contains(&task_id) {
                        touched.push(task_id);
                    }
                }
                Err(rejected) => {
                    tracing::debug!(%task_id, %rejected, "input changes nothing");
                    metrics::counter!("axon_projector_rejected_total").increment(1);
                }
            }
        }
        batch.tasks = touched
            .iter()
            .filter_map(|id| self.cache.get(id).cloned())
            .collect();
        let ended: Vec<_> = batch.events.iter().map(|(e, _)| e).collect();
        let staging = std::time::Instant::now();
        let unsigned = self.logs.stage(&self.pool, &ended).await?;
        record_audit_time("stage", staging);
        // Signatures are made on a blocking thread while the batch's events are written.
        let signing = (!unsigned.is_empty()).then(|| {
            let signer = self.logs.signer().clone();
            tokio::task::spawn_blocking(move || unsigned.sign(&signer))
        });
        let audit = async move {
            match signing {
                None => Ok(Staged::default()),
                Some(signing) => signing
                    .await
                    .map_err(|e| store::Error::Signing(e.to_string())),
            }
        };

        let to = Offsets {
            applied: last_seq,
            fanned: self.fanned.load(Ordering::Acquire),
        };
        let committed = store::commit(&self.pool, &batch, audit, self.offsets, to).await;
        if committed.is_err() {
            self.logs.forget();
        }
        match committed {
            Ok(audit) => {
                let signed = !audit.heads.is_empty();
                self.logs.committed(audit);
                if signed {
                    self.heads.wake();
                }
            }
            Err(e) if e.is_refusal() && messages_len == 1 => {
                tracing::error!(stream_seq = last_seq, error = %e, "Postgres refuses this message for good; skipping it");
                metrics::counter!("axon_projector_poison_total").increment(1);
                // Their cached state includes the refused message: reload them.
                for id in &touched {
                    self.cache.remove(id);
                }
                let nothing = async { Ok(Staged::default()) };
                store::commit(
                    &self.pool,
                    &store::Batch::default(),
                    nothing,
                    self.offsets,
                    to,
                )
                .await?;
                self.offsets = to;
                return Ok(());
            }
            Err(e) => {
                if e.is_refusal() {
                    // Find the message one by one (the restart reloads every projection).
                    self.careful_until = last_seq;
                }
                return Err(e.into());
            }
        }
        let after = self.offsets.applied;
        self.offsets = to;
        for id in &touched {
            if self
                .cache
                .get(id)
                .is_some_and(|p| p.task.state.is_some_and(|s| s.is_terminal()))
            {
                self.cache.remove(id);
            }
        }
        metrics::counter!("axon_events_projected_total").increment(batch.events.len() as u64);
        metrics::gauge!("axon_projector_lag").set(pending as f64);

        let events = batch.events.into_iter().map(|(e, _)| e).collect();
        if jobs
            .try_send(Job {
                after,
                upto: last_seq,
                events,
            })
            .is_err()
        {
            tracing::debug!("fan-out queue full; it will catch up from Postgres");
        }
        Ok(())
    }

    /// Signs and stores the heads held back until now.
    async fn sign_due_heads(&mut self) -> Result<(), Error> {
        let staged = self.logs.due_heads(&self.pool).await?;
        if !staged.heads.is_empty() {
            store::store_heads(&self.pool, &staged.heads).await?;
            self.logs.committed(staged);
            self.heads.wake();
        }
        Ok(())
    }

    /// Loads the projections of tasks in `inputs` that are not cached.
    async fn load_missing(
        &mut self,
        inputs: &[(u64, Result<decode::Input, decode::Poison>)],
    ) -> Result<(), Error> {
        let mut missing = Vec::new();
        for input in inputs.iter().filter_map(|(_, i)| i.as_ref().ok()) {
            let key = (input.tenant_id, input.task_id);
            if !self.cache.contains_key(&input.task_id) && !missing.contains(&key) {
                missing.push(key);
            }
        }
        if !missing.is_empty() {
            for projection in store::projections(&self.pool, &missing).await? {
                self.cache.insert(projection.task_id, projection);
            }
        }
        Ok(())
    }
}

/// Adds the time since `started` to what receipts and heads cost the projector
/// (`axon_projector_audit_seconds{part}`, beside `axon_projector_batch_seconds`): `stage`
/// (receipts built), `sign` (waiting for signatures after the batch's events were
/// written), `write` (their rows), `heads` (held-back heads).
fn record_audit_time(part: &'static str, started: std::time::Instant) {
    metrics::histogram!("axon_projector_audit_seconds", "part" => part)
        .record(started.elapsed().as_secs_f64());
}

/// What waiting for the next batch gave.
enum Next {
    /// Messages, in order.
    Batch(Vec<Message>),
    /// Nothing for a while.
    Idle,
    /// A held-back tree head is due.
    HeadsDue,
    /// The process is stopping.
    Shutdown,
}

/// Waits for a message, then takes every message already delivered (up to `max`); or
/// says the stream was idle, a held-back head is `due`, or the process stops.
async fn next_batch(
    messages: &mut Ordered,
    max: usize,
    idle: &mut tokio::time::Interval,
    due: Option<Instant>,
    shutdown: &CancellationToken,
) -> Result<Next, Error> {
    let heads_due = async {
        match due {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    };
    let first = tokio::select! {
        next = messages.next() => next,
        _ = idle.tick() => return Ok(Next::Idle),
        () = heads_due => return Ok(Next::HeadsDue),
        () = shutdown.cancelled() => return Ok(Next::Shutdown),
    };
    let mut batch = vec![
        first
            .ok_or_else(|| nats("the AXON consumer ended"))?
            .map_err(nats)?,
    ];
    let mut yielded = false;
    while batch.len() < max {
        match messages.next().now_or_never() {
            Some(Some(message)) => batch.push(message.map_err(nats)?),
            Some(None) => break,
            // Let the connection deliver what it has read before calling the batch complete.
            None if !yielded => {
                tokio::task::yield_now().await;
                yielded = true;
            }
            None => break,
        }
    }
    Ok(Next::Batch(batch))
}
