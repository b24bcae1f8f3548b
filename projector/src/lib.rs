//! projector: the single writer of the task log. It consumes stream `AXON` in order
//! (an ordered consumer starting after its offset in Postgres), turns commands and worker
//! events into chained log events through the task aggregate, and writes each batch —
//! `task_events`, `tasks` and its offset — in one transaction, so a redelivered message is
//! never logged twice. After the commit it fans the events out to Redis and `AXON_LOG`;
//! if that fails it keeps projecting and catches the fan-out up from Postgres later.
//!
//! Entry points: [`Projector::create`], then [`Projector::run`]; [`Projector::step`] for tests.

mod decode;
mod fanout;
mod projection;
mod store;

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::consumer::pull::{Ordered, OrderedConfig};
use async_nats::jetstream::stream::Stream;
use async_nats::jetstream::{Context, Message};
use futures::{FutureExt, StreamExt};
use redis::aio::ConnectionManager;
use shared::ids::TaskId;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::fanout::Fanout;
use crate::projection::Projection;
use crate::store::Offsets;

/// Most AXON messages in one transaction.
const MAX_BATCH: usize = 1000;
/// Events re-sent per round when the fan-out catches up from Postgres.
const CATCH_UP_CHUNK: u64 = 5000;
/// Pause between retries after a failure.
const RETRY: Duration = Duration::from_secs(1);

/// Why a projector run stopped (it restarts from its Postgres offset).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Postgres failed or another projector moved the offset.
    #[error(transparent)]
    Store(#[from] store::Error),
    /// NATS failed.
    #[error("nats: {0}")]
    Nats(String),
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
    last_catch_up: Option<Instant>,
}

/// What one step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Processed {
    /// A batch of this many AXON messages was projected.
    Batch(usize),
    /// Shutdown was requested.
    Shutdown,
}

impl Projector {
    /// A projector over connected backends; `axon` is stream `AXON`.
    pub fn create(pool: PgPool, js: Context, axon: Stream, redis: ConnectionManager) -> Self {
        Self {
            fanout: Fanout::new(redis, js, pool.clone()),
            pool,
            axon,
            cache: HashMap::new(),
            offsets: Offsets {
                applied: 0,
                fanned: 0,
            },
            last_catch_up: None,
        }
    }

    /// Projects until `shutdown`; after a failure it restarts from its Postgres offset.
    pub async fn run(mut self, shutdown: CancellationToken) {
        loop {
            match self.run_once(&shutdown).await {
                Ok(()) => return,
                Err(e) => tracing::warn!(error = %e, "projector restarts from its offset"),
            }
            self.cache.clear();
            tokio::select! {
                () = tokio::time::sleep(RETRY) => {}
                () = shutdown.cancelled() => return,
            }
        }
    }

    async fn run_once(&mut self, shutdown: &CancellationToken) -> Result<(), Error> {
        let mut messages = self.subscribe().await?;
        loop {
            if self.step(&mut messages, shutdown).await? == Processed::Shutdown {
                return Ok(());
            }
        }
    }

    /// Loads the offset and opens an ordered consumer right after it.
    pub async fn subscribe(&mut self) -> Result<Ordered, Error> {
        self.offsets = store::offsets(&self.pool).await?;
        self.last_catch_up = None;
        self.catch_up().await;
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
        consumer.messages().await.map_err(nats)
    }

    /// Waits for messages, projects the ready ones as one batch, commits, fans out.
    pub async fn step(
        &mut self,
        messages: &mut Ordered,
        shutdown: &CancellationToken,
    ) -> Result<Processed, Error> {
        let first = tokio::select! {
            next = messages.next() => next,
            () = shutdown.cancelled() => return Ok(Processed::Shutdown),
        };
        let mut batch = vec![
            first
                .ok_or_else(|| nats("the AXON consumer ended"))?
                .map_err(nats)?,
        ];
        while batch.len() < MAX_BATCH {
            match messages.next().now_or_never() {
                Some(Some(message)) => batch.push(message.map_err(nats)?),
                Some(None) | None => break,
            }
        }
        let count = batch.len();
        self.project(batch).await?;
        Ok(Processed::Batch(count))
    }

    async fn project(&mut self, messages: Vec<Message>) -> Result<(), Error> {
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

        let caught_up = self.offsets.fanned == self.offsets.applied;
        let to = Offsets {
            applied: last_seq,
            fanned: self.offsets.fanned,
        };
        store::commit(&self.pool, &batch, self.offsets, to).await?;
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

        let events: Vec<_> = batch.events.into_iter().map(|(e, _)| e).collect();
        if caught_up {
            match self.fanout.send(&events).await {
                Ok(()) => self.offsets.fanned = last_seq,
                Err(e) => tracing::warn!(error = %e, "fan-out failed; will catch up from Postgres"),
            }
        } else {
            self.catch_up().await;
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

    /// Re-sends from Postgres what was committed but not fanned out (at most once a second).
    async fn catch_up(&mut self) {
        if self.last_catch_up.is_some_and(|at| at.elapsed() < RETRY) {
            return;
        }
        self.last_catch_up = Some(Instant::now());
        let behind = self.offsets.fanned < self.offsets.applied;
        while self.offsets.fanned < self.offsets.applied {
            let upto = self
                .offsets
                .applied
                .min(self.offsets.fanned + CATCH_UP_CHUNK);
            let sent = match store::events_between(&self.pool, self.offsets.fanned, upto).await {
                Ok(events) => self.fanout.send(&events).await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            if let Err(error) = sent {
                tracing::warn!(%error, "fan-out catch-up failed; will retry");
                return;
            }
            self.offsets.fanned = upto;
        }
        if behind {
            tracing::info!(
                upto = self.offsets.fanned,
                "fan-out caught up from Postgres"
            );
        }
    }
}
