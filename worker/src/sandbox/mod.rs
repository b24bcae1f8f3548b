//! The shell sandbox. Each running shell task is a *cell*: a user id of its own from
//! `SHELL_UIDS` (in the group of `SHELL_USER`), a private working directory, resource
//! limits, and no way to gain privileges. Tasks never run as the worker's user, cannot
//! read each other's files, environment or processes, and every process a task started
//! (also one that called `setsid` or forked twice) dies when its cell closes: all
//! processes of the cell's user id are killed, then its directory is removed.
//!
//! A user id is held through an exclusive lock on a file, so the worker processes of one
//! machine share the range; a worker that dies releases its locks, and the sweeper of any
//! worker then kills what its cells left behind.

mod procs;

use std::fs::{File, OpenOptions, Permissions};
use std::os::unix::fs::{MetadataExt, PermissionsExt, chown};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use nix::fcntl::{Flock, FlockArg};
use nix::unistd::{Group, Uid};
use shared::config::ShellConfig;
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

/// How often idle user ids are swept for processes a dead worker left.
const SWEEP_EVERY: Duration = Duration::from_secs(5);
/// Kills the task if the worker dies, and forbids gaining privileges (util-linux).
const SETPRIV: &str = "/usr/bin/setpriv";
/// Run as the cell's user id with its directory as `$1`: makes everything there
/// deletable, deletes it, and deletes the user id's files in the shared temporary places.
const CLEANER: &str = "[ -d \"$1\" ] && chmod -R u+rwX \"$1\" 2>/dev/null; \
    [ -d \"$1\" ] && find \"$1\" -mindepth 1 -delete 2>/dev/null; \
    find /tmp /var/tmp /dev/shm -xdev -user \"$(id -u)\" -delete 2>/dev/null; \
    [ ! -d \"$1\" ] || [ -z \"$(ls -A \"$1\")\" ]";

/// The sandbox of one worker process.
#[derive(Debug)]
pub struct Sandbox {
    config: ShellConfig,
    gid: u32,
    root: PathBuf,
    locks: PathBuf,
}

/// One running task's place: its user id (held while the cell lives) and directory.
pub struct Cell {
    sandbox: Arc<Sandbox>,
    uid: u32,
    dir: PathBuf,
    _held: Flock<File>,
}

impl Sandbox {
    /// Checks that tasks can be isolated here (the worker runs as root, `SHELL_USER`
    /// exists, `SHELL_WORK_DIR` is usable) and makes the directories. The error says what
    /// to fix.
    pub fn prepare(config: &ShellConfig) -> Result<Self, String> {
        if !Path::new(SETPRIV).exists() {
            return Err(format!(
                "{SETPRIV} (util-linux) is missing; the shell sandbox needs it to forbid gaining privileges"
            ));
        }
        if !Uid::effective().is_root() {
            return Err("the shell adapter runs each task as a user of its own, which needs a worker started as root (it never runs tasks as root); start the worker as root, or remove shell from ADAPTERS_ENABLED".into());
        }
        let group = Group::from_name(&config.user)
            .map_err(|e| format!("cannot look up SHELL_USER '{}': {e}", config.user))?
            .ok_or_else(|| {
                format!(
                    "SHELL_USER '{0}' does not exist; scripts/services.sh creates it, or: useradd --system --user-group --no-create-home --shell /usr/sbin/nologin {0}",
                    config.user
                )
            })?;
        let root = PathBuf::from(&config.work_dir);
        let locks = root.join(".uids");
        std::fs::create_dir_all(&locks)
            .map_err(|e| format!("SHELL_WORK_DIR {}: cannot create it: {e}", root.display()))?;
        std::fs::set_permissions(&root, Permissions::from_mode(0o711))
            .and_then(|()| std::fs::set_permissions(&locks, Permissions::from_mode(0o700)))
            .map_err(|e| format!("SHELL_WORK_DIR {}: {e}", root.display()))?;
        searchable(&root)?;
        // Rust opens every descriptor close-on-exec; ones this process inherited are not,
        // and a task must get none of them.
        close_fds::set_fds_cloexec_threadsafe(3, &[]);
        Ok(Self {
            config: config.clone(),
            gid: group.gid.as_raw(),
            root,
            locks,
        })
    }

    /// Opens a cell: takes a free user id, kills what an earlier holder left, and makes a
    /// fresh directory that only the new user id can enter.
    pub async fn open(self: &Arc<Self>) -> Result<Cell, String> {
        let (first, last) = self.config.uids;
        for uid in first..=last {
            let Some(held) = self.hold(uid)? else {
                continue;
            };
            let cell = Cell {
                sandbox: self.clone(),
                uid,
                dir: self.root.join(uid.to_string()),
                _held: held,
            };
            // A user id whose leftovers cannot be cleared is skipped, not reused.
            if let Err(e) = cell.clear().await {
                tracing::error!(uid, error = %e, "cannot clear a sandbox user id; trying the next");
                continue;
            }
            let dir = cell.dir.clone();
            let gid = self.gid;
            tokio::task::spawn_blocking(move || {
                std::fs::create_dir(&dir)?;
                chown(&dir, Some(uid), Some(gid))?;
                std::fs::set_permissions(&dir, Permissions::from_mode(0o700))
            })
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("cannot make the task's directory: {e}"))?;
            return Ok(cell);
        }
        Err(format!(
            "no user id in SHELL_UIDS ({first}-{last}) is free (each runs a task, or could not be cleared: see the log); widen the range or lower WORKER_CONCURRENCY"
        ))
    }

    /// Locks user id `uid` for this process; `None` if another cell holds it.
    fn hold(&self, uid: u32) -> Result<Option<Flock<File>>, String> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.locks.join(uid.to_string()))
            .map_err(|e| format!("cannot open the lock of uid {uid}: {e}"))?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(held) => Ok(Some(held)),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
            Err((_, e)) => Err(format!("cannot lock uid {uid}: {e}")),
        }
    }

    /// Until `stop`: every few seconds, kills the processes of user ids no cell holds (a
    /// worker died with tasks running) and removes their directories.
    pub async fn sweep(self: Arc<Self>, stop: CancellationToken) {
        loop {
            let range = self.config.uids;
            let owners = tokio::task::spawn_blocking(move || procs::owners(range))
                .await
                .unwrap_or_default();
            for uid in owners {
                if let Ok(Some(held)) = self.hold(uid) {
                    let orphan = Cell {
                        sandbox: self.clone(),
                        uid,
                        dir: self.root.join(uid.to_string()),
                        _held: held,
                    };
                    tracing::warn!(uid, "killing processes a lost task left behind");
                    if let Err(e) = orphan.clear().await {
                        tracing::error!(uid, error = %e, "cannot clear a sandbox user id");
                    }
                }
            }
            tokio::select! {
                () = tokio::time::sleep(SWEEP_EVERY) => {}
                () = stop.cancelled() => return,
            }
        }
    }
}

impl Cell {
    /// A command running `argv` in this cell: its user id, directory (or `cwd` in it),
    /// only `env` and a few basics as environment, limits applied, stdin closed.
    pub fn command(
        &self,
        argv: &[String],
        env: &std::collections::BTreeMap<String, String>,
        cwd: Option<&str>,
    ) -> Command {
        let config = &self.sandbox.config;
        // Applied by `/bin/sh` as the task's user before it execs the command; the task's
        // own `env` is set only then, by `env`, so nothing of it (LD_PRELOAD, say) reaches
        // setpriv or the shell that sets the limits.
        let limits = format!(
            "ulimit -c 0 && ulimit -n 1024 && ulimit -p {} && ulimit -v {} && ulimit -t {} && ulimit -f {} && exec /usr/bin/env -- \"$@\"",
            config.max_procs,
            config.max_memory_mb * 1024,
            config.max_cpu_s,
            config.max_file_mb * 2048,
        );
        let mut command = Command::new(SETPRIV);
        let dir = self.dir.display().to_string();
        command
            .args(["--no-new-privs", "--pdeathsig", "KILL", "--", "/bin/sh"])
            .args(["-c", &limits, "axontask-shell"])
            .args(env.iter().map(|(name, value)| format!("{name}={value}")))
            .args(argv)
            .env_clear()
            .envs([
                ("PATH", "/usr/local/bin:/usr/bin:/bin"),
                ("LANG", "C.UTF-8"),
                ("HOME", dir.as_str()),
                ("TMPDIR", dir.as_str()),
                ("USER", config.user.as_str()),
                ("LOGNAME", config.user.as_str()),
            ])
            .current_dir(self.dir.join(cwd.unwrap_or(".")))
            .uid(self.uid)
            .gid(self.sandbox.gid)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        command
    }

    /// Kills every process of the cell, wherever it went.
    pub async fn kill_all(&self) -> Result<(), String> {
        procs::kill_all(self.uid, self.sandbox.gid).await
    }

    /// Kills every process of the cell, deletes every file its user id owns where tasks
    /// may write (its directory's contents, and in `/tmp`, `/var/tmp`, `/dev/shm`) as that
    /// user id (`find` copes with trees of any depth), then removes the empty directory.
    async fn clear(&self) -> Result<(), String> {
        self.kill_all().await?;
        let dir = self.dir.display().to_string();
        let cleaned = Command::new("/bin/sh")
            .args(["-c", CLEANER, "axontask-clean", &dir])
            .uid(self.uid)
            .gid(self.sandbox.gid)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .map_err(|e| format!("cannot run the cleaner: {e}"))?;
        if !cleaned.success() {
            return Err(format!("the cleaner of {dir} failed ({cleaned})"));
        }
        let path = self.dir.clone();
        tokio::task::spawn_blocking(move || match std::fs::remove_dir(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("cannot remove {dir}: {e}"))
    }

    /// Ends the cell: kills what is left, removes the directory, frees the user id.
    pub async fn close(self) {
        if let Err(e) = self.clear().await {
            // The user id stays locked by nobody; the sweeper tries again.
            tracing::error!(uid = self.uid, error = %e, "cannot clear a finished task's sandbox");
        }
    }
}

/// Checks that other users can reach `dir` (every ancestor searchable) and that only root
/// controls the way there: no symbolic link, every part owned by root, none writable by
/// others unless sticky (as `/tmp` is).
fn searchable(dir: &Path) -> Result<(), String> {
    for ancestor in dir.ancestors() {
        let meta = std::fs::symlink_metadata(ancestor)
            .map_err(|e| format!("SHELL_WORK_DIR: {}: {e}", ancestor.display()))?;
        let mode = meta.permissions().mode();
        let writable_by_others = mode & 0o022 != 0 && mode & 0o1000 == 0;
        if meta.file_type().is_symlink() || meta.uid() != 0 || writable_by_others {
            return Err(format!(
                "SHELL_WORK_DIR {}: {} must be a directory owned by root that only root can write to (not a symbolic link), so no one else can swap what tasks get",
                dir.display(),
                ancestor.display()
            ));
        }
        if mode & 0o001 == 0 {
            return Err(format!(
                "SHELL_WORK_DIR {}: {} (mode {:o}) is not searchable by other users, so tasks could not reach their directories; pick a directory such as /var/lib/axontask/tasks",
                dir.display(),
                ancestor.display(),
                mode & 0o777
            ));
        }
    }
    Ok(())
}
