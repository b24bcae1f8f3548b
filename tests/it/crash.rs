//! Crashes: a worker or the projector SIGKILLed mid-task, Redis flushed mid-stream.

use e2e::{Cluster, Options, assert_chain, collect_to_end, kinds, until_kind};
use futures::StreamExt;
use serde_json::{Value, json};

/// A Redis stream entry: its id and fields.
type Entry = (String, Vec<(String, String)>);

fn worker_pid(started: &Value) -> u32 {
    let worker = started["payload"]["worker_id"].as_str().expect("worker_id");
    worker
        .rsplit(':')
        .next()
        .and_then(|pid| pid.parse().ok())
        .expect("host:pid")
}

#[tokio::test]
async fn a_killed_worker_s_task_is_run_again_by_another() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(Options {
        workers: 2,
        ..Options::default()
    })
    .await?;
    let task = cluster
        .start_task(
            json!({"name": "long", "adapter": "mock", "args": {"steps": 15, "interval_ms": 100}}),
        )
        .await?;
    let (mut seen, stream) = until_kind(cluster.sse(&task, "", None).await?, "progress").await?;
    let pid = worker_pid(&seen[1]);
    let victim = ["worker-1", "worker-2"]
        .into_iter()
        .find(|name| cluster.pid(name) == Some(pid))
        .expect("the worker that started the task");
    cluster.kill(victim).await?;
    seen.extend(collect_to_end(stream).await?);
    assert_chain(&seen);
    assert_eq!(kinds(&seen).last(), Some(&"succeeded"));
    assert_eq!(e2e::attempts(&seen), [1, 2]);
    assert_ne!(
        worker_pid(
            seen.iter()
                .rfind(|e| e["kind"] == "started")
                .expect("a restart")
        ),
        pid
    );
    cluster.assert_everywhere(&task, &seen, true).await?;
    Ok(())
}

#[tokio::test]
async fn a_task_whose_workers_keep_dying_fails_with_a_reason() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(Options {
        max_attempts: 1,
        ..Options::default()
    })
    .await?;
    let task = cluster
        .start_task(json!({"name": "doomed", "adapter": "mock", "args": {"steps": 100, "interval_ms": 100}}))
        .await?;
    let (mut seen, stream) = until_kind(cluster.sse(&task, "", None).await?, "started").await?;
    cluster.kill("worker-1").await?;
    cluster.spawn_role("worker-2", "worker").await?;
    seen.extend(collect_to_end(stream).await?);
    assert_chain(&seen);
    let last = seen.last().expect("events");
    assert_eq!(last["kind"], "failed");
    let error = last["payload"]["error"].as_str().expect("an error");
    assert!(error.contains("TASK_MAX_ATTEMPTS"), "{error}");
    Ok(())
}

#[tokio::test]
async fn a_killed_projector_resumes_without_duplicates_or_gaps() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(Options::default()).await?;
    let lines = 20_000;
    let task = cluster
        .start_task(json!({"name": "chatty", "adapter": "shell", "args": {"command": format!("seq 1 {lines}")}}))
        .await?;
    let mut stream = cluster.sse(&task, "", None).await?;
    let mut seen = Vec::new();
    while seen.len() < 100 {
        seen.push(
            tokio::time::timeout(e2e::PATIENCE, stream.next())
                .await?
                .expect("an event"),
        );
    }
    cluster.kill("projector").await?;
    cluster.spawn_role("projector-2", "projector").await?;
    seen.extend(collect_to_end(stream).await?);
    assert_eq!(
        seen.len(),
        lines + 3,
        "requested, started, the lines, succeeded"
    );
    assert_chain(&seen);
    cluster.assert_everywhere(&task, &seen, true).await?;
    Ok(())
}

#[tokio::test]
async fn sse_clients_get_every_event_across_a_redis_flushall() -> anyhow::Result<()> {
    let cluster = Cluster::start(Options::default()).await?;
    let task = cluster
        .start_task(
            json!({"name": "flush", "adapter": "mock", "args": {"steps": 30, "interval_ms": 20}}),
        )
        .await?;
    let (mut seen, stream) = until_kind(cluster.sse(&task, "", None).await?, "progress").await?;
    let mut redis = cluster.redis().await?;
    redis::cmd("FLUSHALL").query_async::<()>(&mut redis).await?;
    seen.extend(collect_to_end(stream).await?);
    assert_eq!(seen.len(), 33);
    assert_chain(&seen);
    // A client arriving after the flush reads what Redis lost from Postgres.
    assert_eq!(cluster.stream_to_end(&task).await?, seen);
    cluster.assert_everywhere(&task, &seen, false).await?;
    Ok(())
}

#[tokio::test]
async fn the_log_catches_up_after_redis_was_down() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(Options::default()).await?;
    let task = cluster
        .start_task(
            json!({"name": "outage", "adapter": "mock", "args": {"steps": 40, "interval_ms": 25}}),
        )
        .await?;
    let (mut seen, stream) = until_kind(cluster.sse(&task, "", None).await?, "progress").await?;
    cluster.kill_redis().await?;
    // While Redis is down the stream goes on from Postgres.
    let (more, stream) = until_kind(stream, "succeeded").await?;
    seen.extend(more);
    cluster.restart_redis().await?;
    assert_eq!(seen.len(), 43);
    assert_chain(&seen);
    let mut stream = stream;
    assert!(
        tokio::time::timeout(e2e::PATIENCE, stream.next())
            .await?
            .is_none()
    );
    // The projector re-sends from Postgres what it could not append while Redis was down.
    // (The restarted Redis is empty: what it held before is gone, and readers get that
    // range from Postgres.)
    let key = format!("events:{task}");
    let redis = cluster.redis().await?;
    e2e::eventually(|| {
        let mut redis = redis.clone();
        let key = key.clone();
        async move {
            let last: redis::RedisResult<Vec<Entry>> = redis::cmd("XREVRANGE")
                .arg(key)
                .arg("+")
                .arg("-")
                .arg("COUNT")
                .arg(1)
                .query_async(&mut redis)
                .await;
            last.is_ok_and(|entries| entries.first().is_some_and(|(id, _)| id == "43-0"))
        }
    })
    .await?;
    let mut redis = redis;
    let entries: Vec<Entry> = redis::cmd("XRANGE")
        .arg(&key)
        .arg("-")
        .arg("+")
        .query_async(&mut redis)
        .await?;
    let first = 44 - entries.len();
    for ((id, fields), event) in entries.iter().zip(&seen[first - 1..]) {
        assert_eq!(id, &format!("{}-0", event["seq"]));
        let data = fields
            .iter()
            .find(|(k, _)| k == "data")
            .map(|(_, v)| v)
            .expect("data");
        assert_eq!(&serde_json::from_str::<Value>(data)?, event);
    }
    // A client arriving now gets the whole log, whatever Redis lacks coming from Postgres.
    assert_eq!(cluster.stream_to_end(&task).await?, seen);
    cluster.assert_everywhere(&task, &seen, false).await?;
    Ok(())
}

#[tokio::test]
async fn a_start_command_delivered_again_after_the_end_does_not_run_the_task_again()
-> anyhow::Result<()> {
    let cluster = Cluster::start(Options::default()).await?;
    // A file outside the task's own directory that its sandbox user may append to; it
    // stays root's, so the sandbox does not delete it with the task's own leftovers.
    let scratch = tempfile::tempdir()?;
    let runs = scratch.path().join("runs");
    std::fs::write(&runs, "")?;
    for path in [scratch.path(), runs.as_path()] {
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o777))?;
    }
    let command = format!("echo ran >> {}", runs.display());
    let task = cluster
        .start_task(json!({"name": "once", "adapter": "shell", "args": {"command": command}}))
        .await?;
    let events = cluster.stream_to_end(&task).await?;
    // As if the worker had died between storing `succeeded` and acking: the command again.
    let js = cluster.js().await?;
    let axon = js.get_stream("AXON").await?;
    let tenant = events[0]["tenant_id"].as_str().expect("tenant");
    let start = axon
        .direct_get_last_for_subject(format!("axon.cmd.{tenant}.{task}.start"))
        .await?;
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", "a-second-delivery");
    js.publish_with_headers(start.subject.to_string(), headers, start.payload)
        .await?
        .await?;
    // Commands are taken in order, and a mock task takes longer than `echo`: once a later
    // task ends, the repeat was handled.
    let later = cluster
        .start_task(json!({"name": "later", "adapter": "mock", "args": {"steps": 2}}))
        .await?;
    cluster.stream_to_end(&later).await?;
    assert_eq!(
        std::fs::read_to_string(&runs)?,
        "ran\n",
        "the command ran once"
    );
    assert_eq!(cluster.stream_to_end(&task).await?, events);
    Ok(())
}

#[tokio::test]
async fn a_message_postgres_refuses_is_skipped_without_stalling_the_log() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(Options {
        workers: 0,
        ..Options::default()
    })
    .await?;
    let first = cluster
        .start_task(json!({"name": "before", "adapter": "mock", "args": {"steps": 1}}))
        .await?;
    let mut stream = cluster.sse(&first, "", None).await?;
    let requested = tokio::time::timeout(e2e::PATIENCE, stream.next())
        .await?
        .expect("an event");
    let tenant = requested["tenant_id"].as_str().expect("tenant").to_owned();
    // With the projector down, the refused message and a good one wait in one batch.
    cluster.kill("projector").await?;
    // A start command that never came through command-api: Postgres cannot store a NUL.
    let bad = uuid::Uuid::now_v7();
    let command = json!({
        "task_id": bad, "tenant_id": tenant, "ts": "2026-11-27T07:19:16.123456Z",
        "name": "nul\u{0}name", "adapter": "mock", "args": {}, "timeout_s": null,
        "idempotency_key": null, "max_attempts": 3
    });
    let js = cluster.js().await?;
    js.publish(
        format!("axon.cmd.{tenant}.{bad}.start"),
        serde_json::to_vec(&command)?.into(),
    )
    .await?
    .await?;
    let after = cluster
        .start_task(json!({"name": "after", "adapter": "mock", "args": {"steps": 1}}))
        .await?;
    cluster.spawn_role("projector-2", "projector").await?;
    let mut stream = cluster.sse(&after, "", None).await?;
    let requested = tokio::time::timeout(e2e::PATIENCE, stream.next())
        .await?
        .expect("an event");
    assert_eq!(
        requested["kind"], "requested",
        "the log goes on past the refused message"
    );
    let pool = cluster.pg().await?;
    let (refused,): (i64,) = sqlx::query_as("SELECT count(*) FROM task_events WHERE task_id = $1")
        .bind(bad)
        .fetch_one(&pool)
        .await?;
    assert_eq!(refused, 0);
    let metrics = cluster
        .http
        .get(cluster.metrics_url("projector-2"))
        .send()
        .await?
        .text()
        .await?;
    assert!(
        metrics.contains("axon_projector_poison_total 1"),
        "{metrics}"
    );
    Ok(())
}
