//! Adapters run a task and report its events; one module per adapter.

pub mod docker;
pub mod fly;
pub mod lines;
pub mod mock;
pub mod shell;

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::stream::Stream;
use shared::adapters::AdapterArgs;
use shared::events::TaskEvent;
use tokio_util::sync::CancellationToken;

use crate::emitter::{Emitter, ShuttingDown};
use crate::sandbox::Sandbox;
use docker::engine::Engine;

/// How an adapter run ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// It ran to its end; the terminal event to log.
    Finished(TaskEvent),
    /// It was stopped through its stop token.
    Stopped,
}

/// Where adapters run tasks: the shell sandbox, the Docker engine and the Machines API,
/// each present when its adapter is enabled.
#[derive(Clone, Default)]
pub struct Places {
    /// Cells for `shell` tasks.
    pub sandbox: Option<Arc<Sandbox>>,
    /// The engine of `docker` tasks.
    pub docker: Option<Arc<Engine>>,
    /// The Machines API of `fly` tasks.
    pub fly: Option<Arc<fly::api::Api>>,
}

impl Places {
    /// Removes what runs of attempts that are over left behind (containers, Machines), as
    /// a worker starts: their workers died before removing it.
    pub async fn sweep(&self, axon: &Stream) {
        let mut removed = 0;
        if let Some(engine) = &self.docker {
            removed += docker::sweep::finished_attempts(engine, axon).await;
        }
        if let Some(api) = &self.fly {
            removed += fly::sweep::finished_attempts(api, axon).await;
        }
        if removed > 0 {
            tracing::info!(
                removed,
                "removed the containers and Machines of finished attempts"
            );
        }
    }
}

/// Runs `args` until done or until `stop` fires, in the place its adapter runs tasks.
pub async fn run(
    args: AdapterArgs,
    out: &Emitter,
    stop: CancellationToken,
    kill_grace: Duration,
    places: &Places,
) -> Result<Outcome, ShuttingDown> {
    match args {
        AdapterArgs::Mock(args) => mock::run(args, out, stop).await,
        AdapterArgs::Shell(args) => match &places.sandbox {
            Some(sandbox) => shell::run(args, out, stop, kill_grace, sandbox).await,
            None => Ok(not_enabled("shell")),
        },
        AdapterArgs::Docker(args) => match &places.docker {
            Some(engine) => docker::run(args, out, stop, kill_grace, engine).await,
            None => Ok(not_enabled("docker")),
        },
        AdapterArgs::Fly(args) => match &places.fly {
            Some(api) => fly::run(args, out, stop, kill_grace, api).await,
            None => Ok(not_enabled("fly")),
        },
    }
}

/// The end of a command that exited with `code` (§3.8): `succeeded` with the code when it
/// is 0, else `failed` naming it.
pub fn exited_with(code: i32) -> Outcome {
    Outcome::Finished(if code == 0 {
        TaskEvent::Succeeded {
            result: serde_json::json!({"exit_code": 0}),
        }
    } else {
        TaskEvent::Failed {
            error: format!("exit code {code}"),
            exit_code: Some(code),
        }
    })
}

/// The end of a run that failed before (or without) an exit code.
pub fn failed(error: String) -> Outcome {
    Outcome::Finished(TaskEvent::Failed {
        error,
        exit_code: None,
    })
}

fn not_enabled(adapter: &str) -> Outcome {
    failed(format!(
        "this worker does not run {adapter} tasks; the operator enables {adapter} with ADAPTERS_ENABLED"
    ))
}
