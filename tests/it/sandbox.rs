//! The shell sandbox: a task runs under a user id of its own, cannot read the worker, the
//! data folder or another task, stays within its limits, and leaves no process behind.

use e2e::{Cluster, Options, alive, eventually, kinds, processes_of, until_kind, workspace};
use futures::StreamExt;
use serde_json::{Value, json};

/// The `stdout` lines of a list of events.
fn lines(events: &[Value]) -> Vec<&str> {
    events
        .iter()
        .filter(|e| e["kind"] == "stdout")
        .filter_map(|e| e["payload"]["line"].as_str())
        .collect()
}

/// Runs `command` as a shell task to its end; its events.
async fn run(cluster: &Cluster, command: &str) -> anyhow::Result<Vec<Value>> {
    let task = cluster
        .start_task(json!({"name": "probe", "adapter": "shell", "args": {"command": command}}))
        .await?;
    cluster.stream_to_end(&task).await
}

#[tokio::test]
async fn a_shell_task_cannot_read_the_worker_the_data_folder_or_gain_privileges()
-> anyhow::Result<()> {
    let cluster = Cluster::start(Options::default()).await?;
    let data = workspace().join(".data");
    let command = format!(
        "id -u; id -gn; \
         cat /proc/$PPID/environ >/dev/null 2>&1 && echo worker-env-read || echo worker-env-refused; \
         ls {data} >/dev/null 2>&1 && echo data-listed || echo data-refused; \
         cat {data}/services.env >/dev/null 2>&1 && echo services-env-read || echo services-env-refused; \
         grep NoNewPrivs /proc/self/status | tr -d '\\t '; \
         ls /proc/$$/fd | tr '\\n' ' '; echo; \
         touch here && pwd",
        data = data.display()
    );
    let events = run(&cluster, &command).await?;
    assert_eq!(kinds(&events).last(), Some(&"succeeded"), "{events:?}");
    let lines = lines(&events);
    let uid: u32 = lines[0].parse()?;
    assert!(
        (2_000_000..=2_000_999).contains(&uid),
        "runs as a uid of SHELL_UIDS, not {uid}"
    );
    assert_eq!(
        lines[1..7],
        [
            "axon-task",
            "worker-env-refused",
            "data-refused",
            "services-env-refused",
            "NoNewPrivs:1",
            "0 1 2 "
        ]
    );
    // Its directory was its own, and was removed.
    assert!(
        lines[7].starts_with("/var/lib/axontask/tasks/"),
        "{}",
        lines[7]
    );
    // (Its user id, and so its directory's name, may already serve another task.)
    let file = std::path::Path::new(lines[7]).join("here");
    assert!(!file.exists(), "{} is gone", file.display());
    Ok(())
}

#[tokio::test]
async fn a_shell_task_cannot_log_in_to_postgres_as_the_superuser() -> anyhow::Result<()> {
    let cluster = Cluster::start(Options::default()).await?;
    let url = reqwest::Url::parse(&cluster.database_url)?;
    let port = url.port().unwrap_or(5432);
    let socket = workspace().join(".data/pg-run");
    let command = format!(
        "export PGCONNECT_TIMEOUT=5; \
         psql -w -h 127.0.0.1 -p {port} -U postgres -d postgres -Atc 'select 1' 2>&1; echo tcp=$?; \
         psql -w -h {socket} -p {port} -U postgres -d postgres -Atc 'select 1' 2>&1; echo socket=$?",
        socket = socket.display()
    );
    let events = run(&cluster, &command).await?;
    let lines = lines(&events);
    assert!(lines.contains(&"tcp=2"), "{lines:?}");
    assert!(lines.contains(&"socket=2"), "{lines:?}");
    assert!(
        lines.iter().any(|l| l.contains("no password supplied")),
        "{lines:?}"
    );
    Ok(())
}

#[tokio::test]
async fn what_a_task_leaves_in_shared_temporary_places_is_deleted_with_it() -> anyhow::Result<()> {
    let cluster = Cluster::start(Options::default()).await?;
    let name = format!("axon-leftover-{}", uuid::Uuid::now_v7().simple());
    let command = format!(
        "echo secret > /tmp/{name}; mkdir -p /var/tmp/{name}/deep; echo x > /var/tmp/{name}/deep/f; \
         echo \"$GREETING\"; ulimit -p"
    );
    let task = cluster
        .start_task(json!({"name": "litter", "adapter": "shell",
            "args": {"command": command, "env": {"LD_PRELOAD": "", "GREETING": "hi"}}}))
        .await?;
    let events = cluster.stream_to_end(&task).await?;
    assert_eq!(kinds(&events).last(), Some(&"succeeded"), "{events:?}");
    // The task's own environment reaches its command, and the limits hold whatever it says.
    assert_eq!(lines(&events), ["hi", "256"]);
    for path in [format!("/tmp/{name}"), format!("/var/tmp/{name}")] {
        assert!(!std::path::Path::new(&path).exists(), "{path} was deleted");
    }
    Ok(())
}

#[tokio::test]
async fn a_task_cannot_read_another_running_task_s_files_or_environment() -> anyhow::Result<()> {
    let cluster = Cluster::start(Options::default()).await?;
    let first = cluster
        .start_task(json!({"name": "holder", "adapter": "shell", "args": {
            "command": "echo $$; pwd; echo hidden > mine; exec sleep 600",
            "env": {"HOLDER_SECRET": "s3cr3t"}
        }}))
        .await?;
    let (pid, stream) = e2e::first_stdout::<i32>(cluster.sse(&first, "", None).await?).await?;
    let (seen, _stream) = until_kind(stream, "stdout").await?;
    let dir = seen
        .last()
        .and_then(|e| e["payload"]["line"].as_str())
        .unwrap_or_default()
        .to_owned();
    let probe = format!(
        "cat {dir}/mine 2>/dev/null || echo file-refused; \
         ls {dir} >/dev/null 2>&1 && echo dir-listed || echo dir-refused; \
         cat /proc/{pid}/environ 2>/dev/null || echo env-refused"
    );
    let events = run(&cluster, &probe).await?;
    assert_eq!(
        lines(&events),
        ["file-refused", "dir-refused", "env-refused"]
    );
    assert_eq!(cluster.cancel(&first).await?.0, 200);
    Ok(())
}

#[tokio::test]
async fn setsid_and_double_forked_processes_are_gone_after_cancel() -> anyhow::Result<()> {
    let cluster = Cluster::start(Options::default()).await?;
    let task = cluster
        .start_task(json!({"name": "escaper", "adapter": "shell", "args": {
            "command": "setsid sleep 600 & (setsid sh -c 'sleep 601 &' &); id -u; exec sleep 600"
        }}))
        .await?;
    let (uid, stream) = e2e::first_stdout::<u32>(cluster.sse(&task, "", None).await?).await?;
    assert_ne!(uid, 0);
    eventually(|| async { processes_of(uid) >= 3 }).await?;
    assert_eq!(cluster.cancel(&task).await?.0, 200);
    let rest = e2e::collect_to_end(stream).await?;
    assert_eq!(kinds(&rest).last(), Some(&"canceled"));
    eventually(|| async { processes_of(uid) == 0 }).await?;
    Ok(())
}

#[tokio::test]
async fn a_fork_bomb_stays_within_its_limit_and_is_gone_after_the_timeout() -> anyhow::Result<()> {
    let cluster = Cluster::start(Options {
        env: vec![("SHELL_MAX_PROCS", "40"), ("SHELL_MAX_FILE_MB", "1")],
        ..Options::default()
    })
    .await?;
    // A file above SHELL_MAX_FILE_MB stops the writer (SIGXFSZ).
    let big = run(&cluster, "head -c 2000000 /dev/zero > big").await?;
    assert_eq!(
        big.last().map(|e| e["payload"]["exit_code"].clone()),
        Some(json!(153)),
        "{big:?}"
    );

    let task = cluster
        .start_task(
            json!({"name": "bomb", "adapter": "shell", "timeout_s": 3, "args": {
                // The bomb starts from a subshell forked first, so the task's own shell
                // needs no fork once processes run out (it would fail, not time out).
                "command": "id -u; (bomb() { bomb | bomb & }; bomb) 2>/dev/null & exec sleep 600"
            }}),
        )
        .await?;
    let (uid, mut stream) = e2e::first_stdout(cluster.sse(&task, "", None).await?).await?;
    let mut most = 0;
    let mut rest = Vec::new();
    loop {
        most = most.max(e2e::all_processes_of(uid));
        let next = tokio::time::timeout(std::time::Duration::from_millis(50), stream.next()).await;
        if let Ok(event) = next {
            let event = event.expect("an event");
            let end = e2e::is_terminal(&event);
            rest.push(event);
            if end {
                break;
            }
        }
    }
    assert_eq!(kinds(&rest).last(), Some(&"timeout"));
    assert!(most > 20, "the bomb ran ({most} processes)");
    // The limit, plus the sandbox's own killer while it runs.
    assert!(most <= 41, "{most} processes, above SHELL_MAX_PROCS");
    eventually(|| async { processes_of(uid) == 0 }).await?;
    // The worker still runs tasks.
    let after = run(&cluster, "echo fine").await?;
    assert_eq!(lines(&after), ["fine"]);
    Ok(())
}

#[tokio::test]
async fn what_a_lost_worker_s_task_left_running_is_killed() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(Options {
        workers: 2,
        ..Options::default()
    })
    .await?;
    let task = cluster
        .start_task(json!({"name": "orphan", "adapter": "shell", "args": {
            "command": "setsid sleep 600 & echo $!; exec sleep 600"
        }}))
        .await?;
    let (seen, stream) = until_kind(cluster.sse(&task, "", None).await?, "started").await?;
    let worker = seen[1]["payload"]["worker_id"].as_str().unwrap_or_default();
    let worker_pid = worker.rsplit(':').next().unwrap_or_default().to_owned();
    let (orphan, _stream) = e2e::first_stdout::<i32>(stream).await?;
    assert!(alive(orphan));
    let victim = ["worker-1", "worker-2"]
        .into_iter()
        .find(|name| cluster.pid(name).map(|p| p.to_string()) == Some(worker_pid.clone()))
        .expect("the worker that runs the task");
    cluster.kill(victim).await?;
    // The other worker's sweeper (or its next cell on that user id) kills what was left.
    eventually(|| async { !alive(orphan) }).await?;
    assert_eq!(cluster.cancel(&task).await?.0, 200);
    Ok(())
}
