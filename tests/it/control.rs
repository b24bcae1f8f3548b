//! Cancel, failure, timeout and idempotent starts.

use std::time::{Duration, Instant};

use e2e::{Cluster, Options, alive, assert_chain, collect_to_end, eventually, kinds, until_kind};
use serde_json::json;

#[tokio::test]
async fn cancel_stops_a_running_process_within_two_seconds() -> anyhow::Result<()> {
    let cluster = Cluster::start(Options::default()).await?;
    let task = cluster
        .start_task(json!({"name": "sleeper", "adapter": "shell", "args": {"command": "echo $$; exec sleep 60"}}))
        .await?;
    let (pid, stream) = e2e::first_stdout::<i32>(cluster.sse(&task, "", None).await?).await?;
    assert!(alive(pid), "sleep 60 runs as pid {pid}");
    let asked = Instant::now();
    let (status, body) = cluster.cancel(&task).await?;
    assert_eq!((status, body), (200, json!({"canceled": true})));
    let rest = e2e::collect_to_end(stream).await?;
    assert_eq!(kinds(&rest), ["cancel_requested", "canceled"]);
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "canceled after {:?}",
        asked.elapsed()
    );
    eventually(|| async { !alive(pid) }).await?;
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "process gone after {:?}",
        asked.elapsed()
    );

    // Cancel is idempotent.
    let (status, body) = cluster.cancel(&task).await?;
    assert_eq!((status, body), (200, json!({"canceled": true})));
    assert_chain(&cluster.stream_to_end(&task).await?);
    Ok(())
}

#[tokio::test]
async fn a_process_that_ignores_sigterm_is_killed_after_the_grace_period() -> anyhow::Result<()> {
    let cluster = Cluster::start(Options::default()).await?;
    // An ignored signal stays ignored across exec: only SIGKILL stops this sleep.
    let task = cluster
        .start_task(json!({"name": "stubborn", "adapter": "shell", "args": {"command": "trap '' TERM; echo $$; exec sleep 60"}}))
        .await?;
    let (pid, stream) = e2e::first_stdout::<i32>(cluster.sse(&task, "", None).await?).await?;
    let asked = Instant::now();
    assert_eq!(cluster.cancel(&task).await?.0, 200);
    let rest = e2e::collect_to_end(stream).await?;
    assert_eq!(kinds(&rest), ["cancel_requested", "canceled"]);
    // SHELL_KILL_GRACE_MS is 1000 in these tests.
    assert!(
        asked.elapsed() >= Duration::from_millis(900),
        "ended after {:?}",
        asked.elapsed()
    );
    eventually(|| async { !alive(pid) }).await?;
    assert!(
        asked.elapsed() < Duration::from_secs(3),
        "gone after {:?}",
        asked.elapsed()
    );
    Ok(())
}

#[tokio::test]
async fn output_after_the_process_exits_is_read_until_it_goes_silent() -> anyhow::Result<()> {
    let cluster = Cluster::start(Options::default()).await?;
    // `setsid` leaves the task's process group, so this child outlives the task and keeps
    // its stdout open: its late lines (3 s of them) are all read, then the task ends once
    // the output stays silent (2 s), though the child lives on. The task exits only once
    // the child has left its group (the file `detached`, in the task's own directory,
    // says so).
    let command = "setsid sh -c 'touch detached; \
                   for i in 1 2 3 4 5 6; do sleep 0.5; echo late$i; done; sleep 8' & \
                   while [ ! -e detached ]; do sleep 0.01; done; echo started";
    let task = cluster
        .start_task(json!({
            "name": "daemon", "adapter": "shell",
            "args": {"command": command}
        }))
        .await?;
    let begun = Instant::now();
    let events = cluster.stream_to_end(&task).await?;
    let lines: Vec<&str> = events
        .iter()
        .filter_map(|e| e["payload"]["line"].as_str())
        .collect();
    assert_eq!(
        lines,
        [
            "started", "late1", "late2", "late3", "late4", "late5", "late6"
        ]
    );
    assert_eq!(kinds(&events).last(), Some(&"succeeded"));
    assert!(
        begun.elapsed() < Duration::from_secs(9),
        "ended after {:?}",
        begun.elapsed()
    );
    Ok(())
}

#[tokio::test]
async fn a_pending_task_canceled_is_never_started() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(Options {
        workers: 0,
        ..Options::default()
    })
    .await?;
    let task = cluster
        .start_task(json!({"name": "never", "adapter": "mock", "args": {"steps": 1}}))
        .await?;
    let (status, _) = cluster.cancel(&task).await?;
    assert_eq!(status, 200);
    let events = cluster.stream_to_end(&task).await?;
    assert_eq!(
        kinds(&events),
        ["requested", "cancel_requested", "canceled"]
    );

    // A worker that comes later takes the start command but does not run it.
    cluster.spawn_role("worker-late", "worker").await?;
    let later = cluster
        .start_task(json!({"name": "later", "adapter": "mock", "args": {"steps": 1}}))
        .await?;
    assert_eq!(
        kinds(&cluster.stream_to_end(&later).await?).last(),
        Some(&"succeeded")
    );
    let again = cluster.stream_to_end(&task).await?;
    assert_eq!(again, events, "nothing was added to the canceled task");
    Ok(())
}

#[tokio::test]
async fn failure_and_timeout_are_terminal_states() -> anyhow::Result<()> {
    let cluster = Cluster::start(Options::default()).await?;
    let failing = cluster
        .start_task(json!({"name": "f", "adapter": "shell", "args": {"command": ["sh", "-c", "echo oops >&2; exit 3"]}}))
        .await?;
    let events = cluster.stream_to_end(&failing).await?;
    assert_eq!(kinds(&events), ["requested", "started", "stderr", "failed"]);
    assert_eq!(
        events[3]["payload"],
        json!({"error": "exit code 3", "exit_code": 3})
    );

    let mock = cluster
        .start_task(json!({"name": "m", "adapter": "mock", "args": {"steps": 3, "interval_ms": 1, "fail_at": 2}}))
        .await?;
    let events = cluster.stream_to_end(&mock).await?;
    assert_eq!(
        kinds(&events),
        ["requested", "started", "progress", "failed"]
    );
    assert_eq!(
        events[3]["payload"],
        json!({"error": "mock failure at step 2"})
    );

    let slow = cluster
        .start_task(json!({"name": "t", "adapter": "shell", "args": {"command": "sleep 30"}, "timeout_s": 1}))
        .await?;
    let started = Instant::now();
    let events = cluster.stream_to_end(&slow).await?;
    assert_eq!(kinds(&events), ["requested", "started", "timeout"]);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "timed out after {:?}",
        started.elapsed()
    );
    let (_, status) = cluster
        .get(&format!("/mcp/tasks/{slow}/status"), Some(&cluster.api_key))
        .await?;
    assert_eq!(status["state"], "timeout");

    // Nothing is left to cancel once a task ended otherwise.
    let (code, body) = cluster.cancel(&slow).await?;
    assert_eq!(code, 409, "{body}");
    assert_eq!(body["error"]["code"], "task_already_ended");
    Ok(())
}

#[tokio::test]
async fn a_retried_start_with_an_idempotency_key_is_one_task() -> anyhow::Result<()> {
    let cluster = Cluster::start(Options::default()).await?;
    let body = json!({"name": "once", "adapter": "mock", "args": {"steps": 1}, "idempotency_key": "deploy-42"});
    let first = cluster.start_task(body.clone()).await?;
    let second = cluster.start_task(body.clone()).await?;
    assert_eq!(first, second);
    let events = cluster.stream_to_end(&first).await?;
    assert_eq!(
        kinds(&events),
        ["requested", "started", "progress", "succeeded"]
    );
    // After the projector recorded it, the key is found in Postgres.
    assert_eq!(cluster.start_task(body).await?, first);
    let other = cluster
        .start_task(json!({"name": "once", "adapter": "mock", "args": {"steps": 1}}))
        .await?;
    assert_ne!(other, first, "no key, a new task");
    // Another tenant's identical key is another task.
    let beta = cluster.create_key("beta").await?;
    let (_, theirs) = cluster
        .post(
            "/mcp/start_task",
            Some(&beta),
            &json!({"name": "once", "adapter": "mock", "idempotency_key": "deploy-42"}),
        )
        .await?;
    assert_ne!(theirs["task_id"], json!(first));
    Ok(())
}

#[tokio::test]
async fn a_cancel_the_worker_never_heard_live_still_stops_the_task() -> anyhow::Result<()> {
    let cluster = Cluster::start(Options::default()).await?;
    let task = cluster
        .start_task(json!({"name": "deaf", "adapter": "shell", "args": {"command": "sleep 600"}}))
        .await?;
    let (mut seen, stream) = until_kind(cluster.sse(&task, "", None).await?, "started").await?;
    // A cancel that reaches stream AXON without ever being published on its subject (as
    // when the worker's connection dropped at that moment): it comes through a source.
    let js = cluster.js().await?;
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "LOST".into(),
        subjects: vec!["lost.>".into()],
        ..Default::default()
    })
    .await?;
    let mut axon = js.get_stream("AXON").await?;
    let mut config = axon.info().await?.config.clone();
    config.sources = Some(vec![async_nats::jetstream::stream::Source {
        name: "LOST".into(),
        subject_transforms: vec![async_nats::jetstream::stream::SubjectTransform {
            source: "lost.>".into(),
            destination: "axon.>".into(),
        }],
        ..Default::default()
    }]);
    js.update_stream(config).await?;
    let tenant = seen[0]["tenant_id"].as_str().expect("tenant");
    let cancel = json!({"task_id": task, "tenant_id": tenant, "ts": "2026-11-27T00:00:00.000000Z"});
    js.publish(
        format!("lost.cmd.{tenant}.{task}.cancel"),
        serde_json::to_vec(&cancel)?.into(),
    )
    .await?
    .await?;
    seen.extend(collect_to_end(stream).await?);
    assert_eq!(kinds(&seen).last(), Some(&"canceled"), "{:?}", kinds(&seen));
    Ok(())
}
