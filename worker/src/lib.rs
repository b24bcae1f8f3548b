//! worker: runs tasks. Each tenant's start commands wait in a durable pull consumer of its
//! own (`shared::queue`); a worker takes one command per free slot, tenants in turn
//! ([`fair`]), runs each through its adapter,
//! publishes the events to `axon.evt.*`, keeps the command in progress while it runs and
//! acks it only after JetStream stored the terminal event.
//!
//! It never writes Postgres or Redis: the projector turns its events into the log.
//! Entry points: [`Worker::create`], then [`Worker::run`].

pub mod adapters;
mod attempt;
mod cancels;
pub mod emitter;
mod fair;
pub mod sandbox;
mod stored;
mod tenants;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use async_nats::jetstream::Context;
use async_nats::jetstream::stream::Stream;
use shared::config::WorkerConfig;
use shared::ids::TaskId;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Why the worker stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// NATS failed.
    #[error(transparent)]
    Nats(#[from] shared::nats::Error),
    /// The shell adapter is enabled but tasks cannot be isolated here.
    #[error("shell sandbox: {0}")]
    Sandbox(String),
    /// The fly adapter is enabled but its API client cannot be made.
    #[error("fly adapter: {0}")]
    Fly(String),
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
    /// Where shell and docker tasks run (when their adapters are enabled).
    pub places: adapters::Places,
    /// The cancel commands of the tasks this process runs.
    pub cancels: cancels::Cancels,
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

/// A worker process's consumer loop.
pub struct Worker {
    ctx: Env,
}

impl Worker {
    /// Prepares the shell sandbox (if shell is enabled), the Docker engine's client (if
    /// docker is; the engine is contacted when first needed) and the Machines API client
    /// (if fly is).
    pub async fn create(
        client: async_nats::Client,
        js: Context,
        axon: Stream,
        settings: Settings,
    ) -> Result<Self, Error> {
        let enabled = |adapter: &str| settings.adapters_enabled.iter().any(|a| a == adapter);
        let sandbox = if enabled("shell") {
            let prepared =
                sandbox::Sandbox::prepare(&settings.tuning.shell).map_err(Error::Sandbox)?;
            Some(Arc::new(prepared))
        } else {
            None
        };
        let docker = enabled("docker").then(|| {
            Arc::new(adapters::docker::engine::Engine::new(
                settings.tuning.docker.clone(),
            ))
        });
        let fly = if enabled("fly") {
            let api = adapters::fly::api::Api::new(&settings.tuning.fly).map_err(Error::Fly)?;
            Some(Arc::new(api))
        } else {
            None
        };
        Ok(Self {
            ctx: Env {
                client,
                js,
                axon,
                settings: Arc::new(settings),
                running: Arc::default(),
                acks: emitter::AckBudget::default(),
                places: adapters::Places {
                    sandbox,
                    docker,
                    fly,
                },
                cancels: cancels::Cancels::default(),
            },
        })
    }

    /// Takes start commands while it has free slots, until `shutdown` (retrying while NATS
    /// is unreachable). Running attempts are then stopped and their commands handed back
    /// for another worker.
    pub async fn run(mut self, shutdown: CancellationToken) {
        match cancels::Cancels::listen(&self.ctx.client, shutdown.clone()).await {
            Ok(cancels) => self.ctx.cancels = cancels,
            Err(e) => {
                tracing::error!(error = %e, "cannot hear cancel commands; running tasks see a cancel only at their periodic look at the stored one");
            }
        }
        let slots = Arc::new(Semaphore::new(self.ctx.settings.tuning.concurrency));
        let running = TaskTracker::new();
        if let Some(sandbox) = &self.ctx.places.sandbox {
            running.spawn(sandbox.clone().sweep(shutdown.clone()));
        }
        let (places, axon) = (self.ctx.places.clone(), self.ctx.axon.clone());
        running.spawn(async move { places.sweep(&axon).await });
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
        let heard = tenants::Heard::default();
        running.spawn(tenants::listen(
            self.ctx.client.clone(),
            self.ctx.axon.clone(),
            heard.clone(),
            shutdown.clone(),
        ));
        let mut fair = fair::Fair::new(self.ctx.axon.clone(), self.ctx.settings.tuning.ack_wait);
        loop {
            let slot = loop {
                tokio::select! {
                    slot = slots.clone().acquire_owned() => break slot.expect("the semaphore is never closed"),
                    // No slot freed in a while: another worker may run what this one took.
                    () = tokio::time::sleep(fair.max_hold() / 2), if fair.holds() => {
                        fair.release_stale().await;
                    }
                    () = shutdown.cancelled() => {
                        fair.release().await;
                        return;
                    }
                }
            };
            let message = loop {
                fair.hear(heard.take()).await;
                if let Some(message) = fair.next().await {
                    break message;
                }
                tokio::select! {
                    () = heard.wait() => {}
                    () = shutdown.cancelled() => return,
                }
            };
            let ctx = self.ctx.clone();
            let shutdown = shutdown.clone();
            let tenant = shared::queue::tenant_of_subject(&message.subject);
            let heard = heard.clone();
            running.spawn(async move {
                attempt::run(ctx, message, shutdown).await;
                drop(slot);
                // Its queue may hold tasks that waited for this one (the plan's concurrency).
                if let Some(tenant) = tenant {
                    heard.add(tenant);
                }
            });
        }
    }
}
