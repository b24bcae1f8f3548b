//! Processes by user id, from `/proc`, and killing all of one user id's processes.

use std::collections::HashSet;
use std::time::Duration;

use tokio::process::Command;

/// Rounds of SIGKILL before a user id counts as stuck.
const KILL_ROUNDS: usize = 50;

/// The user ids in `range` that own a live (not zombie) process.
pub fn owners(range: (u32, u32)) -> HashSet<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return HashSet::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|entry| {
            entry
                .file_name()
                .to_str()
                .is_some_and(|name| name.bytes().all(|b| b.is_ascii_digit()))
        })
        .filter_map(|entry| std::fs::read_to_string(entry.path().join("status")).ok())
        .filter_map(|status| live_uid(&status))
        .filter(|uid| (range.0..=range.1).contains(uid))
        .collect()
}

/// The real user id of a process from its `status`, unless it is a zombie (one whose
/// other threads still run is not: its main thread exited, the process lives on).
fn live_uid(status: &str) -> Option<u32> {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .map(str::trim)
    };
    let zombie = field("State:").is_some_and(|state| state.starts_with('Z'));
    let threads: u32 = field("Threads:").and_then(|n| n.parse().ok()).unwrap_or(1);
    if zombie && threads <= 1 {
        return None;
    }
    field("Uid:")?.split_whitespace().next()?.parse().ok()
}

/// SIGKILLs every process of `uid` (a shell running as `uid` calls `kill(-1)`, which the
/// kernel applies to all of them at once, forks included) until none is left. The first
/// round runs whatever `/proc` shows, in case it shows a process as gone that is not.
pub async fn kill_all(uid: u32, gid: u32) -> Result<(), String> {
    for round in 0..KILL_ROUNDS {
        let alive = tokio::task::spawn_blocking(move || owners((uid, uid)))
            .await
            .map_err(|e| e.to_string())?;
        if round > 0 && alive.is_empty() {
            return Ok(());
        }
        Command::new("/bin/sh")
            .args(["-c", "kill -KILL -1 2>/dev/null; exit 0"])
            .uid(uid)
            .gid(gid)
            .env_clear()
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .await
            .map_err(|e| format!("cannot run the killer for uid {uid}: {e}"))?;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Err(format!("processes of uid {uid} survive SIGKILL"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zombies_do_not_count_unless_threads_live_on() {
        let status = |state: &str, threads: u32| {
            format!(
                "Name:\tsleep\nState:\t{state}\nUid:\t2000001\t2000001\t2000001\t2000001\nThreads:\t{threads}\n"
            )
        };
        assert_eq!(live_uid(&status("S (sleeping)", 1)), Some(2_000_001));
        assert_eq!(live_uid(&status("Z (zombie)", 1)), None);
        assert_eq!(live_uid(&status("Z (zombie)", 3)), Some(2_000_001));
    }
}
