//! worker: runs tasks. Workers share one durable pull consumer on start commands; each
//! takes only as many commands as it has free slots, runs each through its adapter,
//! publishes the events to `axon.evt.*`, keeps the command in progress while it runs and
//! acks it only after JetStream stored the terminal event.
//!
//! It never writes Postgres or Redis: the projector turns its events into the log.
//! Entry points: [`Worker::create`], then [`Worker::run`].

pub mod adapters;
mod attempt;
pub mod emitter;
pub mod sandbox;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, PullConsumer, pull};
use async_nats::jetstream::stream::Stream;
use async_nats::jetstream::{AckKind, Context};
use futures::StreamExt;
use shared::config::WorkerConfig;
use shared::ids::TaskId;
use shared::names;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long one pull request waits for commands.
const PULL_EXPIRES: Duration = Duration::from_secs(5);
/// Pause after a failed pull (NATS unreachable).
const RETRY: Duration = Duration::from_secs(1);

/// Why the worker stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// NATS failed.
    #[error(transparent)]
    Nats(#[from] shared::nats::Error),
    /// The shell adapter is enabled but tasks cannot be isolated here.
    #[error("shell sandbox: {0}")]
    Sandbox(String),
}

/// What every attempt needs.
#[derive(Clone)]
pub(crate) struct Env {
    pub client: async_nats::Client,
    pub js: Context,
    pub axon: Stream,
    pub settings: Arc<Settings>,
    /// Tasks this process runs now: a start command redelivered to the worker that still
    /// runs it (its in-progress acks were late) must not start a second attempt.
    pub running: Arc<Mutex<HashSet<TaskId>>>,
    /// The publish acks all attempts may await at once.
    pub acks: emitter::AckBudget,
    /// Where shell tasks run (when the shell adapter is enabled).
    pub sandbox: Option<Arc<sandbox::Sandbox>>,
}

/// The worker's settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Names this worker in `started` events.
    pub worker_id: String,
    /// Adapters this worker may run (`ADAPTERS_ENABLED`).
    pub adapters_enabled: Vec<String>,
    /// Concurrency, ack wait, attempts, kill grace.
    pub tuning: WorkerConfig,
}

/// The shared durable consumer of start commands.
fn consumer_config(tuning: &WorkerConfig) -> pull::Config {
    pull::Config {
        durable_name: Some(names::WORKER_CONSUMER.to_owned()),
        filter_subject: names::START_FILTER.to_owned(),
        ack_policy: AckPolicy::Explicit,
        ack_wait: tuning.ack_wait,
        max_ack_pending: 10_000,
        ..Default::default()
    }
}

/// A worker process's consumer loop.
pub struct Worker {
    ctx: Env,
    consumer: PullConsumer,
}

impl Worker {
    /// Prepares the shell sandbox (if shell is enabled) and creates (or updates) the
    /// shared durable consumer.
    pub async fn create(
        client: async_nats::Client,
        js: Context,
        axon: Stream,
        settings: Settings,
    ) -> Result<Self, Error> {
        let sandbox = if settings.adapters_enabled.iter().any(|a| a == "shell") {
            let prepared =
                sandbox::Sandbox::prepare(&settings.tuning.shell).map_err(Error::Sandbox)?;
            Some(Arc::new(prepared))
        } else {
            None
        };
        let consumer = axon
            .create_consumer(consumer_config(&settings.tuning))
            .await
            .map_err(shared::nats::Error::nats)?;
        Ok(Self {
            ctx: Env {
                client,
                js,
                axon,
                settings: Arc::new(settings),
                running: Arc::default(),
                acks: emitter::AckBudget::default(),
                sandbox,
            },
            consumer,
        })
    }

    /// Takes start commands while it has free slots, until `shutdown` (retrying while NATS
    /// is unreachable). Running attempts are then stopped and their commands handed back
    /// for another worker.
    pub async fn run(self, shutdown: CancellationToken) {
        let slots = Arc::new(Semaphore::new(self.ctx.settings.tuning.concurrency));
        let running = TaskTracker::new();
        if let Some(sandbox) = &self.ctx.sandbox {
            running.spawn(sandbox.clone().sweep(shutdown.clone()));
        }
        self.take_commands(&slots, &running, &shutdown).await;
        running.close();
        running.wait().await;
    }

    async fn take_commands(
        &self,
        slots: &Arc<Semaphore>,
        running: &TaskTracker,
        shutdown: &CancellationToken,
    ) {
        let mut consumer = self.consumer.clone();
        loop {
            let first = tokio::select! {
                permit = slots.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
                () = shutdown.cancelled() => return,
            };
            let mut permit = Some(first);
            let pulled = consumer
                .batch()
                .max_messages(slots.available_permits() + 1)
                .expires(PULL_EXPIRES)
                .messages()
                .await;
            let mut batch = match pulled {
                Ok(batch) => batch,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot pull start commands; retrying");
                    if !self.pause_and_renew(&mut consumer, shutdown).await {
                        return;
                    }
                    continue;
                }
            };
            let mut failed = false;
            loop {
                let next = tokio::select! {
                    next = batch.next() => next,
                    () = shutdown.cancelled() => return,
                };
                let message = match next {
                    None => break,
                    Some(Ok(message)) => message,
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "pull request failed");
                        failed = true;
                        break;
                    }
                };
                if shutdown.is_cancelled() {
                    let _ = message.ack_with(AckKind::Nak(None)).await;
                    continue;
                }
                let slot = match permit.take() {
                    Some(slot) => slot,
                    None => slots.clone().acquire_owned().await.expect("never closed"),
                };
                let ctx = self.ctx.clone();
                let shutdown = shutdown.clone();
                running.spawn(async move {
                    attempt::run(ctx, message, shutdown).await;
                    drop(slot);
                });
            }
            if failed && !self.pause_and_renew(&mut consumer, shutdown).await {
                return;
            }
        }
    }

    /// After a failed pull: waits a moment, then makes the consumer again (the stream may
    /// have been created anew, taking its consumers with it; making it is idempotent).
    /// False when the worker is shutting down.
    async fn pause_and_renew(
        &self,
        consumer: &mut PullConsumer,
        shutdown: &CancellationToken,
    ) -> bool {
        tokio::select! {
            () = tokio::time::sleep(RETRY) => {}
            () = shutdown.cancelled() => return false,
        }
        let config = consumer_config(&self.ctx.settings.tuning);
        match self.ctx.axon.create_consumer(config).await {
            Ok(renewed) => *consumer = renewed,
            Err(e) => {
                tracing::warn!(error = %e, "cannot make the start-command consumer; retrying")
            }
        }
        true
    }
}
