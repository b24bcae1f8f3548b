//! `shell`: runs a command in its own process group, with a scrubbed environment and
//! resource limits; one `stdout`/`stderr` event per line. Stop sends SIGTERM to the group,
//! then SIGKILL after the grace period.

use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde_json::json;
use shared::adapters::{ShellArgs, ShellCommand};
use shared::events::TaskEvent;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

use super::Outcome;
use crate::emitter::{Emitter, ShuttingDown};

/// Longest line in one event; longer lines are split.
pub const MAX_LINE_BYTES: usize = 8 * 1024;
/// The only environment a task inherits, besides its own `env`.
const BASE_ENV: [(&str, &str); 3] = [
    ("PATH", "/usr/local/bin:/usr/bin:/bin"),
    ("LANG", "C.UTF-8"),
    ("HOME", "/tmp"),
];
/// Applied by `/bin/sh` before it execs the command: no core dumps, at most 4096 open
/// files, files of at most 4 GiB.
const LIMITS: &str = "ulimit -c 0; ulimit -n 4096; ulimit -f 4194304; exec \"$@\"";
/// Kills the task if the worker dies (util-linux; used when present).
const SETPRIV: &str = "/usr/bin/setpriv";
/// After the process ended, its output is read to the end unless the pipe stays silent
/// this long (a process outside its group holds it open).
const DRAIN: Duration = Duration::from_secs(2);

/// Runs the shell task.
pub async fn run(
    args: ShellArgs,
    out: &Emitter,
    stop: CancellationToken,
    kill_grace: Duration,
) -> Result<Outcome, ShuttingDown> {
    let mut child = match command(&args).spawn() {
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
        let status = wait_or_stop(&mut child, group, &stop, kill_grace).await;
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

fn command(args: &ShellArgs) -> Command {
    let argv: Vec<String> = match &args.command {
        ShellCommand::Script(script) => vec!["/bin/sh".into(), "-c".into(), script.clone()],
        ShellCommand::Argv(argv) => argv.clone(),
    };
    let mut command = if Path::new(SETPRIV).exists() {
        let mut c = Command::new(SETPRIV);
        c.args(["--pdeathsig", "KILL", "--", "/bin/sh"]);
        c
    } else {
        Command::new("/bin/sh")
    };
    command
        .args(["-c", LIMITS, "axontask-shell"])
        .args(argv)
        .env_clear()
        .envs(BASE_ENV)
        .envs(&args.env)
        .current_dir(args.cwd.as_deref().unwrap_or("/tmp"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    command
}

/// Waits for the process; on stop, SIGTERM then SIGKILL to its group. `None` if stopped.
async fn wait_or_stop(
    child: &mut Child,
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
        signal(group, Signal::SIGKILL);
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
    Outcome::Finished(if code == 0 {
        TaskEvent::Succeeded {
            result: json!({"exit_code": 0}),
        }
    } else {
        TaskEvent::Failed {
            error: format!("exit code {code}"),
            exit_code: Some(code),
        }
    })
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
    let mut line = Vec::new();
    loop {
        let read = if reader.buffer().is_empty() {
            tokio::select! {
                read = reader.fill_buf() => read,
                () = silent_after(exited) => break,
            }
        } else {
            reader.fill_buf().await
        };
        let chunk = match read {
            Ok([]) | Err(_) => break,
            Ok(chunk) => chunk,
        };
        let (take, ends_line) = match chunk.iter().position(|&b| b == b'\n') {
            Some(at) => (at + 1, true),
            None => (chunk.len(), false),
        };
        line.extend_from_slice(&chunk[..take]);
        reader.consume(take);
        if ends_line {
            out.emit(event(clean(&line))).await?;
            line.clear();
        }
        while line.len() >= MAX_LINE_BYTES {
            let cut = char_boundary(&line, MAX_LINE_BYTES);
            out.emit(event(clean(&line[..cut]))).await?;
            line.drain(..cut);
        }
    }
    if !line.is_empty() {
        out.emit(event(clean(&line))).await?;
    }
    Ok(())
}

/// Completes [`DRAIN`] after `exited` fired.
async fn silent_after(exited: &CancellationToken) {
    exited.cancelled().await;
    tokio::time::sleep(DRAIN).await;
}

/// The line as text: newline stripped, invalid UTF-8 replaced by U+FFFD, NULs dropped.
fn clean(bytes: &[u8]) -> String {
    let bytes = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
    String::from_utf8_lossy(bytes).replace('\0', "")
}

/// The largest cut at or below `max` that does not split a UTF-8 sequence.
fn char_boundary(bytes: &[u8], max: usize) -> usize {
    let mut cut = max.min(bytes.len());
    // Continuation bytes look like 0b10xxxxxx; back up at most 3 of them.
    while cut > max.saturating_sub(3) && cut < bytes.len() && (bytes[cut] & 0xC0) == 0x80 {
        cut -= 1;
    }
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_cleaned() {
        assert_eq!(clean(b"hello\n"), "hello");
        assert_eq!(clean(b"dos\r\n"), "dos");
        assert_eq!(clean(b"a\0b"), "ab");
        assert_eq!(clean(b"bad \xff byte"), "bad \u{fffd} byte");
    }

    #[test]
    fn long_lines_split_between_characters() {
        let text = "é".repeat(10);
        let bytes = text.as_bytes();
        let cut = char_boundary(bytes, 5);
        assert_eq!(cut, 4);
        assert!(std::str::from_utf8(&bytes[..cut]).is_ok());
        assert_eq!(char_boundary(b"abcdef", 4), 4);
        assert_eq!(char_boundary(b"ab", 4), 2);
    }

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
