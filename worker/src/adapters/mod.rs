//! Adapters run a task and report its events; one module per adapter.

pub mod lines;
pub mod mock;
pub mod shell;

use std::sync::Arc;
use std::time::Duration;

use shared::adapters::AdapterArgs;
use shared::events::TaskEvent;
use tokio_util::sync::CancellationToken;

use crate::emitter::{Emitter, ShuttingDown};
use crate::sandbox::Sandbox;

/// How an adapter run ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// It ran to its end; the terminal event to log.
    Finished(TaskEvent),
    /// It was stopped through its stop token.
    Stopped,
}

/// Runs `args` until done or until `stop` fires; shell tasks run in `sandbox`, which a
/// worker with the shell adapter enabled always has.
pub async fn run(
    args: AdapterArgs,
    out: &Emitter,
    stop: CancellationToken,
    kill_grace: Duration,
    sandbox: Option<&Arc<Sandbox>>,
) -> Result<Outcome, ShuttingDown> {
    match (args, sandbox) {
        (AdapterArgs::Mock(args), _) => mock::run(args, out, stop).await,
        (AdapterArgs::Shell(args), Some(sandbox)) => {
            shell::run(args, out, stop, kill_grace, sandbox).await
        }
        (AdapterArgs::Shell(_), None) => Ok(Outcome::Finished(TaskEvent::Failed {
            error:
                "this worker has no shell sandbox; the operator enables shell with ADAPTERS_ENABLED"
                    .into(),
            exit_code: None,
        })),
    }
}
