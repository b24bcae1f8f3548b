//! The fan-out to Redis and `AXON_LOG` under faults: an event a sink refuses for good is
//! skipped there (and counted) while every later event still goes out; SSE clients leaving
//! all at once leave nothing behind in the hub.

use anyhow::Context;
use e2e::{Cluster, Options, eventually};
use serde_json::json;
use shared::ids::{TaskId, TenantId};

#[tokio::test]
async fn an_event_redis_refuses_for_good_is_skipped_and_the_rest_goes_out() -> anyhow::Result<()> {
    let cluster = Cluster::start(Options::default()).await?;
    let first = cluster
        .start_task(
            json!({"name": "first", "adapter": "mock", "args": {"steps": 1, "interval_ms": 1}}),
        )
        .await?;
    let events = cluster.stream_to_end(&first).await?;
    let tenant: TenantId = events[0]["tenant_id"]
        .as_str()
        .unwrap_or_default()
        .parse()?;

    // The stream key of the next task already holds a string: every XADD to it fails.
    let poisoned = TaskId::from_idempotency_key(tenant, "poisoned");
    let mut redis = cluster.redis().await?;
    redis::cmd("SET")
        .arg(format!("events:{poisoned}"))
        .arg("not a stream")
        .query_async::<()>(&mut redis)
        .await?;
    let task = cluster
        .start_task(
            json!({"name": "poisoned", "adapter": "mock", "idempotency_key": "poisoned",
            "args": {"steps": 2, "interval_ms": 1}}),
        )
        .await?;
    assert_eq!(task, poisoned.to_string());
    let refused = cluster
        .stream_to_end(&task)
        .await
        .context("streaming the poisoned task")?;
    let later = cluster
        .start_task(
            json!({"name": "later", "adapter": "mock", "args": {"steps": 2, "interval_ms": 1}}),
        )
        .await?;
    let after = cluster
        .stream_to_end(&later)
        .await
        .context("streaming the later task")?;
    // Everything after the refused events reached Redis and AXON_LOG; the refused task's
    // events reached AXON_LOG.
    cluster.assert_everywhere(&later, &after, true).await?;
    cluster.assert_everywhere(&task, &refused, false).await?;
    let metrics = cluster.metrics_url("projector");
    let text = cluster.http.get(&metrics).send().await?.text().await?;
    let dropped = text
        .lines()
        .find(|l| l.starts_with("axon_fanout_dropped_total"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|n| n.parse::<f64>().ok())
        .unwrap_or_default();
    assert!(
        dropped >= refused.len() as f64,
        "each refused event is counted: {dropped}"
    );
    assert!(
        cluster.log("projector").contains(&task),
        "the log names the task"
    );
    Ok(())
}

#[tokio::test]
async fn sse_clients_leaving_all_at_once_leave_no_hub_topic() -> anyhow::Result<()> {
    let cluster = Cluster::start(Options::default()).await?;
    let task = cluster
        .start_task(json!({"name": "s", "adapter": "shell", "args": {"command": "sleep 30"}}))
        .await?;
    let mut streams = Vec::new();
    for _ in 0..50 {
        streams.push(cluster.sse(&task, "", None).await?);
    }
    let metrics = cluster.metrics_url("api");
    let topics = || async {
        let text = cluster
            .http
            .get(&metrics)
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.lines()
            .find(|l| l.starts_with("axon_hub_topics"))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|n| n.parse::<f64>().ok())
    };
    eventually(|| async { topics().await == Some(1.0) }).await?;
    drop(streams);
    eventually(|| async { topics().await == Some(0.0) }).await?;
    cluster.cancel(&task).await?;
    Ok(())
}
