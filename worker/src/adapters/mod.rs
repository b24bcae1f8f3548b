//! Adapters run a task and report its events; one module per adapter.

pub mod lines;
pub mod mock;
pub mod shell;

use std::time::Duration;

use shared::adapters::AdapterArgs;
use shared::events::TaskEvent;
use tokio_util::sync::CancellationToken;

use crate::emitter::{Emitter, ShuttingDown};

/// How an adapter run ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// It ran to its end; the terminal event to log.
    Finished(TaskEvent),
    /// It was stopped through its stop token.
    Stopped,
}

/// Runs `args` until done or until `stop` fires.
pub async fn run(
    args: AdapterArgs,
    out: &Emitter,
    stop: CancellationToken,
    kill_grace: Duration,
) -> Result<Outcome, ShuttingDown> {
    match args {
        AdapterArgs::Mock(args) => mock::run(args, out, stop).await,
        AdapterArgs::Shell(args) => shell::run(args, out, stop, kill_grace).await,
    }
}
