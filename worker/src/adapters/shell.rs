//! `shell`: runs a command in a sandbox cell (a user id and directory of its own, limits;
//! see [`crate::sandbox`]), in its own process group, with a scrubbed environment; one
//! `stdout`/`stderr` event per line. Stop sends SIGTERM to the group, then SIGKILL to
//! every process of the cell after the grace period; when the task ends, whatever it left
//! running dies with its cell.

use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use shared::adapters::{ShellArgs, ShellCommand};
use shared::events::TaskEvent;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Child;
use tokio_util::sync::CancellationToken;

use super::Outcome;
use super::lines::Lines;
use crate::emitter::{Emitter, ShuttingDown};
use crate::sandbox::{Cell, Sandbox};

/// After the process ended, its output is read to the end unless the pipe stays silent
/// this long (a process outside its group holds it open).
const DRAIN: Duration = Duration::from_secs(2);

/// Runs the shell task in a cell of `sandbox`.
pub async fn run(
    args: ShellArgs,
    out: &Emitter,
    stop: CancellationToken,
    kill_grace: Duration,
    sandbox: &Arc<Sandbox>,
) -> Result<Outcome, ShuttingDown> {
    let cell = match sandbox.open().await {
        Ok(cell) => cell,
        Err(e) => {
            return Ok(Outcome::Finished(TaskEvent::Failed {
                error: format!("cannot prepare the task's sandbox: {e}"),
                exit_code: None,
            }));
        }
    };
    let outcome = run_in(&cell, args, out, stop, kill_grace).await;
    cell.close().await;
    outcome
}

async fn run_in(
    cell: &Cell,
    args: ShellArgs,
    out: &Emitter,
    stop: CancellationToken,
    kill_grace: Duration,
) -> Result<Outcome, ShuttingDown> {
    let argv: Vec<String> = match args.command {
        ShellCommand::Script(script) => vec!["/bin/sh".into(), "-c".into(), script],
        ShellCommand::Argv(argv) => argv,
    };
    let mut child = match cell.command(&argv, &args.env, args.cwd.as_deref()).spawn() {
        Ok(child) => child,
        Err(e) => {
            return Ok(Outcome::Finished(TaskEvent::Failed {
                error: format!("cannot start the command: {e}"),
                exit_code: None,
            }));
        }
    };
    let group = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .map(Pid::from_raw);
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let exited = CancellationToken::new();
    let pumps = async {
        let (stdout, stderr) = tokio::join!(
            pump(stdout, out, &exited, |line| TaskEvent::Stdout { line }),
            pump(stderr, out, &exited, |line| TaskEvent::Stderr { line }),
        );
        stdout.and(stderr)
    };
    let waited = async {
        let status = wait_or_stop(&mut child, cell, group, &stop, kill_grace).await;
        // Whatever the command left running in its group dies with it, so its pipes close.
        signal(group, Signal::SIGKILL);
        exited.cancel();
        status
    };
    let (status, pumped) = tokio::join!(waited, pumps);
    pumped?;
    Ok(match status {
        None => Outcome::Stopped,
        Some(Err(e)) => Outcome::Finished(TaskEvent::Failed {
            error: format!("lost track of the command: {e}"),
            exit_code: None,
        }),
        Some(Ok(status)) => finished(status),
    })
}

/// Waits for the process; on stop, SIGTERM to its group, then SIGKILL to every process of
/// the cell. `None` if stopped.
async fn wait_or_stop(
    child: &mut Child,
    cell: &Cell,
    group: Option<Pid>,
    stop: &CancellationToken,
    kill_grace: Duration,
) -> Option<std::io::Result<ExitStatus>> {
    tokio::select! {
        status = child.wait() => return Some(status),
        () = stop.cancelled() => {}
    }
    signal(group, Signal::SIGTERM);
    if tokio::time::timeout(kill_grace, child.wait())
        .await
        .is_err()
    {
        if let Err(e) = cell.kill_all().await {
            tracing::error!(error = %e, "cannot kill a stopped task's processes");
        }
        // The status does not matter any more; reaping avoids a zombie.
        let _reaped = child.wait().await;
    }
    None
}

fn signal(group: Option<Pid>, signal: Signal) {
    if let Some(group) = group {
        // ESRCH (the group is gone) is the expected case after a clean exit.
        let _ = killpg(group, signal);
    }
}

fn finished(status: ExitStatus) -> Outcome {
    use std::os::unix::process::ExitStatusExt;
    let code = status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(-1);
    super::exited_with(code)
}

/// Emits one event per line of `reader` until it closes, or until it stays silent for
/// [`DRAIN`] once `exited` fired.
async fn pump<R: AsyncRead + Unpin>(
    reader: Option<R>,
    out: &Emitter,
    exited: &CancellationToken,
    event: impl Fn(String) -> TaskEvent,
) -> Result<(), ShuttingDown> {
    let Some(reader) = reader else { return Ok(()) };
    let mut reader = BufReader::with_capacity(64 * 1024, reader);
    let mut lines = Lines::default();
    let mut complete = Vec::new();
    loop {
        let read = tokio::select! {
            read = reader.fill_buf() => read,
            () = silent_after(exited) => break,
        };
        let chunk = match read {
            Ok([]) | Err(_) => break,
            Ok(chunk) => chunk,
        };
        let taken = chunk.len();
        lines.feed(chunk, &mut complete);
        reader.consume(taken);
        for line in complete.drain(..) {
            out.emit(event(line)).await?;
        }
    }
    if let Some(line) = lines.finish() {
        out.emit(event(line)).await?;
    }
    Ok(())
}

/// Completes [`DRAIN`] after `exited` fired.
async fn silent_after(exited: &CancellationToken) {
    exited.cancelled().await;
    tokio::time::sleep(DRAIN).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn exit_codes() {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            finished(ExitStatus::from_raw(0)),
            Outcome::Finished(TaskEvent::Succeeded {
                result: json!({"exit_code": 0})
            })
        );
        assert_eq!(
            finished(ExitStatus::from_raw(3 << 8)),
            Outcome::Finished(TaskEvent::Failed {
                error: "exit code 3".into(),
                exit_code: Some(3)
            })
        );
        assert_eq!(
            finished(ExitStatus::from_raw(9)),
            Outcome::Finished(TaskEvent::Failed {
                error: "exit code 137".into(),
                exit_code: Some(137)
            })
        );
    }
}
