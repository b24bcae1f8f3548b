//! The docker adapter on a real Docker engine (`DOCKER_HOST`, started by the test command):
//! output lines and exit codes, `env` and `workdir`, cancel, timeout, a killed worker, an
//! unknown image, the memory limit, an engine that is not there, bad args, and the
//! containers of finished attempts removed.

use std::time::{Duration, Instant};

use e2e::docker::{busybox_image, containers_of, docker};
use e2e::{Cluster, Options, assert_chain, collect_to_end, eventually, kinds, until_kind};
use serde_json::{Value, json};

/// A cluster whose workers run docker tasks, with `env` added.
async fn cluster_with(env: Vec<(&'static str, &'static str)>) -> anyhow::Result<Cluster> {
    busybox_image().await?;
    Cluster::start(Options {
        adapters: "mock,docker",
        env,
        ..Options::default()
    })
    .await
}

/// The `line`s of the events of `kind`, in order.
fn lines<'a>(events: &'a [Value], kind: &str) -> Vec<&'a str> {
    events
        .iter()
        .filter(|e| e["kind"] == kind)
        .filter_map(|e| e["payload"]["line"].as_str())
        .collect()
}

/// Starts a docker task with `args` (the test image added) and streams it to its end.
async fn run(cluster: &Cluster, mut args: Value) -> anyhow::Result<(String, Vec<Value>)> {
    args["image"] = json!(busybox_image().await?);
    let task = cluster
        .start_task(json!({"name": "container", "adapter": "docker", "args": args}))
        .await?;
    let events = cluster.stream_to_end(&task).await?;
    assert_chain(&events);
    Ok((task, events))
}

/// The terminal event's payload.
fn end(events: &[Value]) -> &Value {
    &events.last().expect("events")["payload"]
}

#[tokio::test]
async fn a_container_streams_its_lines_in_order_and_ends_with_its_exit_code() -> anyhow::Result<()>
{
    let cluster = cluster_with(vec![]).await?;
    let script = "for i in 1 2 3; do echo out$i; echo err$i >&2; done; \
                  echo \"$GREETING\"; pwd; touch made-here && echo writable; \
                  touch /etc/x 2>/dev/null || echo read-only-root";
    let (task, events) = run(
        &cluster,
        json!({"command": script, "env": {"GREETING": "hello there"}, "workdir": "/src"}),
    )
    .await?;
    assert_eq!(kinds(&events).last(), Some(&"succeeded"), "{events:?}");
    assert_eq!(end(&events)["result"], json!({"exit_code": 0}));
    assert_eq!(
        lines(&events, "stdout"),
        [
            "out1",
            "out2",
            "out3",
            "hello there",
            "/src",
            "writable",
            "read-only-root"
        ]
    );
    assert_eq!(lines(&events, "stderr"), ["err1", "err2", "err3"]);
    assert!(containers_of(&task).await?.is_empty(), "removed at the end");

    let (task, events) = run(
        &cluster,
        json!({"command": ["sh", "-c", "echo bye; exit 3"]}),
    )
    .await?;
    assert_eq!(kinds(&events).last(), Some(&"failed"));
    assert_eq!(
        end(&events),
        &json!({"error": "exit code 3", "exit_code": 3})
    );
    assert_eq!(lines(&events, "stdout"), ["bye"]);
    assert!(containers_of(&task).await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn every_line_of_a_chatty_container_is_reported_once_in_order() -> anyhow::Result<()> {
    let cluster = cluster_with(vec![]).await?;
    // A container that exits as soon as it printed: its output must still arrive whole (a
    // followed log once ended 86,000 lines short of 100,000).
    let (_, events) = run(&cluster, json!({"command": ["seq", "1", "30000"]})).await?;
    assert_eq!(kinds(&events).last(), Some(&"succeeded"));
    let lines = lines(&events, "stdout");
    assert_eq!(lines.len(), 30_000);
    assert!(
        lines
            .iter()
            .enumerate()
            .all(|(i, line)| line.parse::<usize>().ok() == Some(i + 1)),
        "every line once, in order"
    );
    Ok(())
}

#[tokio::test]
async fn dozens_of_containers_at_once_on_one_worker_each_end_whole() -> anyhow::Result<()> {
    let cluster = cluster_with(vec![]).await?;
    let image = busybox_image().await?;
    let mut readers = Vec::new();
    for _ in 0..24 {
        let task = cluster
            .start_task(json!({"name": "many", "adapter": "docker",
                "args": {"image": image, "command": ["seq", "1", "2000"]}}))
            .await?;
        let stream = cluster.sse(&task, "", None).await?;
        readers.push(tokio::spawn(async move {
            let events = collect_to_end(stream).await?;
            anyhow::Ok((task, events))
        }));
    }
    for reader in readers {
        let (task, events) = reader.await??;
        assert_chain(&events);
        assert_eq!(kinds(&events).last(), Some(&"succeeded"), "{task}");
        assert_eq!(lines(&events, "stdout").len(), 2_000, "{task}");
        assert!(containers_of(&task).await?.is_empty(), "{task}");
    }
    Ok(())
}

#[tokio::test]
async fn cancel_and_timeout_stop_the_container_and_remove_it() -> anyhow::Result<()> {
    let cluster = cluster_with(vec![]).await?;
    let image = busybox_image().await?;
    let task = cluster
        .start_task(json!({"name": "sleeper", "adapter": "docker",
            "args": {"image": image, "command": ["sleep", "600"]}}))
        .await?;
    let (mut seen, stream) = until_kind(cluster.sse(&task, "", None).await?, "started").await?;
    // The container runs before the cancel.
    eventually(|| async { containers_of(&task).await.is_ok_and(|c| c.len() == 1) }).await?;
    let asked = Instant::now();
    assert_eq!(cluster.cancel(&task).await?.0, 200);
    seen.extend(collect_to_end(stream).await?);
    let took = asked.elapsed();
    assert_eq!(kinds(&seen).last(), Some(&"canceled"), "{seen:?}");
    assert!(took < Duration::from_secs(2), "canceled after {took:?}");
    assert!(
        containers_of(&task).await?.is_empty(),
        "the container is gone"
    );

    let task = cluster
        .start_task(
            json!({"name": "sleeper", "adapter": "docker", "timeout_s": 1,
            "args": {"image": image, "command": "sleep 600"}}),
        )
        .await?;
    let events = cluster.stream_to_end(&task).await?;
    assert_eq!(kinds(&events).last(), Some(&"timeout"), "{events:?}");
    assert!(
        containers_of(&task).await?.is_empty(),
        "the container is gone"
    );
    Ok(())
}

#[tokio::test]
async fn a_killed_worker_s_container_is_removed_and_the_next_attempt_runs() -> anyhow::Result<()> {
    let mut cluster = cluster_with(vec![]).await?;
    let image = busybox_image().await?;
    let task = cluster
        .start_task(json!({"name": "build", "adapter": "docker",
            "args": {"image": image, "command": "echo begin; sleep 3; echo end"}}))
        .await?;
    let (mut seen, stream) = until_kind(cluster.sse(&task, "", None).await?, "stdout").await?;
    let first = containers_of(&task).await?;
    assert_eq!(first.len(), 1, "one container for the attempt");
    cluster.kill("worker-1").await?;
    cluster.spawn_role("worker-2", "worker").await?;
    seen.extend(collect_to_end(stream).await?);
    assert_chain(&seen);
    assert_eq!(e2e::attempts(&seen), [1, 2]);
    assert_eq!(kinds(&seen).last(), Some(&"succeeded"), "{seen:?}");
    assert_eq!(lines(&seen, "stdout"), ["begin", "begin", "end"]);
    let seqs: Vec<u64> = seen.iter().filter_map(|e| e["seq"].as_u64()).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    assert!(
        containers_of(&task).await?.is_empty(),
        "the first attempt's container was removed, and the second's"
    );
    cluster.assert_everywhere(&task, &seen, true).await?;
    Ok(())
}

#[tokio::test]
async fn a_worker_starting_removes_containers_of_finished_attempts() -> anyhow::Result<()> {
    let mut cluster = cluster_with(vec![]).await?;
    let image = busybox_image().await?;
    let (task, events) = run(&cluster, json!({"command": "true"})).await?;
    let tenant = events[0]["tenant_id"]
        .as_str()
        .expect("a tenant")
        .to_owned();
    // What a worker killed after the end and before the removal leaves.
    let labels = [
        format!("axontask.task_id={task}"),
        format!("axontask.tenant_id={tenant}"),
        "axontask.attempt=1".to_owned(),
    ];
    let mut create = vec!["create"];
    for label in &labels {
        create.extend(["--label", label]);
    }
    create.extend([image, "true"]);
    docker(&create).await?;
    // And a container of an attempt still current stays (its worker may be alive).
    let running = cluster
        .start_task(json!({"name": "long", "adapter": "docker",
            "args": {"image": image, "command": "sleep 600"}}))
        .await?;
    eventually(|| async { containers_of(&running).await.is_ok_and(|c| c.len() == 1) }).await?;
    assert_eq!(containers_of(&task).await?.len(), 1);

    cluster.spawn_role("worker-2", "worker").await?;
    eventually(|| async { containers_of(&task).await.is_ok_and(|c| c.is_empty()) }).await?;
    assert_eq!(
        containers_of(&running).await?.len(),
        1,
        "a live attempt's container stays"
    );
    assert_eq!(cluster.cancel(&running).await?.0, 200);
    let events = cluster.stream_to_end(&running).await?;
    assert_eq!(kinds(&events).last(), Some(&"canceled"));
    assert!(containers_of(&running).await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn an_unknown_image_a_memory_limit_and_no_engine_fail_with_a_reason() -> anyhow::Result<()> {
    let cluster = cluster_with(vec![("DOCKER_MEMORY_MB", "16")]).await?;
    for pull in ["never", "missing"] {
        let task = cluster
            .start_task(json!({"name": "nothing", "adapter": "docker",
                "args": {"image": "axontask-test/no-such-image:1", "pull": pull}}))
            .await?;
        let events = cluster.stream_to_end(&task).await?;
        assert_eq!(kinds(&events).last(), Some(&"failed"));
        let error = end(&events)["error"].as_str().unwrap_or_default();
        assert!(
            error.starts_with("image not found: axontask-test/no-such-image:1"),
            "{error}"
        );
    }

    // A shell variable of 64 MB in a container of 16 MiB.
    let (task, events) = run(
        &cluster,
        json!({"command": "x=$(head -c 64000000 /dev/zero | tr '\\0' a); echo ${#x}"}),
    )
    .await?;
    assert_eq!(kinds(&events).last(), Some(&"failed"));
    let error = end(&events)["error"].as_str().unwrap_or_default();
    assert!(error.starts_with("out of memory (limit 16 MiB"), "{error}");
    assert_eq!(end(&events)["exit_code"], 137);
    assert!(containers_of(&task).await?.is_empty());

    let nowhere = cluster_with(vec![("DOCKER_HOST", "unix:///nonexistent/docker.sock")]).await?;
    let (_, events) = run(&nowhere, json!({"command": "true"})).await?;
    assert_eq!(kinds(&events).last(), Some(&"failed"));
    let error = end(&events)["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("docker engine unreachable at unix:///nonexistent/docker.sock"),
        "{error}"
    );
    Ok(())
}

#[tokio::test]
async fn bad_docker_args_are_a_400_naming_the_field() -> anyhow::Result<()> {
    let cluster = cluster_with(vec![]).await?;
    let key = Some(cluster.api_key.as_str());
    for (args, field) in [
        (json!({}), "image"),
        (json!({"image": 5}), "image"),
        (json!({"image": "busybox", "command": 5}), "command"),
        (json!({"image": "busybox", "env": {"A": 1}}), "env.A"),
        (
            json!({"image": "busybox", "workdir": "relative"}),
            "workdir",
        ),
        (json!({"image": "busybox", "pull": "always"}), "pull"),
    ] {
        let (status, answer) = cluster
            .post(
                "/mcp/start_task",
                key,
                &json!({"name": "x", "adapter": "docker", "args": args}),
            )
            .await?;
        assert_eq!(status, 400, "{args}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(field), "{args}: {message}");
    }

    let without = Cluster::start(Options {
        adapters: "mock",
        ..Options::default()
    })
    .await?;
    let (status, answer) = without
        .post(
            "/mcp/start_task",
            Some(&without.api_key),
            &json!({"name": "x", "adapter": "docker", "args": {"image": "busybox"}}),
        )
        .await?;
    assert_eq!(status, 400);
    let message = answer["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("ADAPTERS_ENABLED"), "{message}");
    Ok(())
}
