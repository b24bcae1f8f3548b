//! Every task has a deadline: a default when none is asked, a maximum the operator sets,
//! and a retried attempt keeps the task's original deadline.

use anyhow::Context;
use e2e::{Cluster, Options, collect_to_end, kinds, until_kind};
use serde_json::{Value, json};

#[tokio::test]
async fn a_task_started_without_a_timeout_gets_the_default() -> anyhow::Result<()> {
    let cluster = Cluster::start(Options {
        env: vec![("TASK_DEFAULT_TIMEOUT_S", "1")],
        ..Options::default()
    })
    .await?;
    let task = cluster
        .start_task(
            json!({"name": "forever", "adapter": "shell", "args": {"command": "sleep 600"}}),
        )
        .await?;
    let events = cluster.stream_to_end(&task).await?;
    assert_eq!(kinds(&events).last(), Some(&"timeout"));
    let (_, status) = cluster
        .get(&format!("/mcp/tasks/{task}/status"), Some(&cluster.api_key))
        .await?;
    assert_eq!(
        status["timeout_s"], 1,
        "the status shows the timeout it got"
    );
    Ok(())
}

#[tokio::test]
async fn a_timeout_above_the_maximum_is_refused() -> anyhow::Result<()> {
    let cluster = Cluster::start(Options {
        env: vec![
            ("TASK_MAX_TIMEOUT_S", "60"),
            ("TASK_DEFAULT_TIMEOUT_S", "30"),
        ],
        ..Options::default()
    })
    .await?;
    let (status, body) = cluster
        .post(
            "/mcp/start_task",
            Some(&cluster.api_key),
            &json!({"name": "long", "adapter": "mock", "timeout_s": 61}),
        )
        .await?;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "invalid_timeout");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("TASK_MAX_TIMEOUT_S")),
        "{body}"
    );
    Ok(())
}

/// Seconds between two envelope timestamps.
fn seconds_between(from: &Value, to: &Value) -> anyhow::Result<f64> {
    let at = |e: &Value| {
        chrono::DateTime::parse_from_rfc3339(e["ts"].as_str().context("ts")?)
            .context("an RFC 3339 ts")
    };
    Ok((at(to)? - at(from)?).as_seconds_f64())
}

#[tokio::test]
async fn a_retried_attempt_keeps_the_original_deadline() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(Options {
        workers: 2,
        ..Options::default()
    })
    .await?;
    let task = cluster
        .start_task(json!({"name": "slow", "adapter": "shell",
            "args": {"command": "sleep 600"}, "timeout_s": 4}))
        .await?;
    let (mut seen, stream) = until_kind(cluster.sse(&task, "", None).await?, "started").await?;
    let worker = seen[1]["payload"]["worker_id"]
        .as_str()
        .and_then(|id| id.rsplit(':').next())
        .and_then(|pid| pid.parse::<u32>().ok())
        .context("a worker pid")?;
    let victim = ["worker-1", "worker-2"]
        .into_iter()
        .find(|name| cluster.pid(name) == Some(worker))
        .context("the worker running the task")?;
    cluster.kill(victim).await?;
    seen.extend(collect_to_end(stream).await?);
    assert_eq!(kinds(&seen).last(), Some(&"timeout"), "{:?}", kinds(&seen));
    let starts: Vec<&Value> = seen.iter().filter(|e| e["kind"] == "started").collect();
    assert_eq!(starts.len(), 2, "a second attempt ran: {:?}", kinds(&seen));
    let lasted = seconds_between(starts[0], seen.last().context("an end")?)?;
    assert!(
        lasted < 5.2 && lasted > 3.5,
        "the task timed out {lasted:.1} s after it first started, not 4 s"
    );
    Ok(())
}
