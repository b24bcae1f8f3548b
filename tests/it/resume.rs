//! A client cut off mid-stream resumes with exactly the missing events.

use e2e::{Cluster, Options, assert_chain, collect_to_end, open_sse};
use futures::StreamExt;
use serde_json::{Value, json};

async fn first_events(
    stream: &mut (impl futures::Stream<Item = Value> + Unpin),
    n: usize,
) -> Vec<Value> {
    let mut seen = Vec::new();
    while seen.len() < n {
        let event = tokio::time::timeout(e2e::PATIENCE, stream.next())
            .await
            .expect("in time")
            .expect("an event");
        seen.push(event);
    }
    seen
}

async fn slow_task(cluster: &Cluster) -> anyhow::Result<String> {
    cluster
        .start_task(
            json!({"name": "slow", "adapter": "mock", "args": {"steps": 12, "interval_ms": 40}}),
        )
        .await
}

#[tokio::test]
async fn last_event_id_and_since_seq_resume_without_loss_or_repeat() -> anyhow::Result<()> {
    let cluster = Cluster::start(Options::default()).await?;
    for by_header in [true, false] {
        let task = slow_task(&cluster).await?;
        let mut first = cluster.sse(&task, "", None).await?;
        let mut seen = first_events(&mut first, 4).await;
        drop(first);
        let last = seen.last().expect("four events")["seq"]
            .as_u64()
            .expect("seq");
        let rest = if by_header {
            // Last-Event-ID wins over since_seq.
            cluster.sse(&task, "?since_seq=1", Some(last)).await?
        } else {
            cluster
                .sse(&task, &format!("?since_seq={last}"), None)
                .await?
        };
        seen.extend(collect_to_end(rest).await?);
        assert_eq!(seen.len(), 15, "requested, started, 12 progress, succeeded");
        assert_chain(&seen);
    }
    Ok(())
}

#[tokio::test]
async fn resume_token_and_resume_route() -> anyhow::Result<()> {
    let cluster = Cluster::start(Options::default()).await?;
    let (_, started) = cluster
        .post(
            "/mcp/start_task",
            Some(&cluster.api_key),
            &json!({"name": "t", "adapter": "mock", "args": {"steps": 3, "interval_ms": 10}}),
        )
        .await?;
    let task = started["task_id"].as_str().expect("task_id");
    assert_eq!(started["stream_url"], format!("/mcp/tasks/{task}/stream"));
    let token = started["resume_token"].as_str().expect("resume_token");

    // A browser EventSource: no headers, the token in the query.
    let url = format!(
        "{}/mcp/tasks/{task}/stream?since_seq=2&resume_token={token}",
        cluster.base_url
    );
    let tail = collect_to_end(open_sse(cluster.http.get(&url)).await?).await?;
    assert_eq!(tail.first().expect("events")["seq"], 3);

    let all = collect_to_end(
        open_sse(
            cluster
                .http
                .post(format!("{}/mcp/tasks/{task}/resume", cluster.base_url))
                .header("X-Api-Key", &cluster.api_key)
                .json(&json!({"last_seq": 0})),
        )
        .await?,
    )
    .await?;
    assert_chain(&all);
    assert_eq!(&all[2..], &tail[..]);

    // A token is only good for its own task.
    let other = cluster
        .start_task(json!({"name": "o", "adapter": "mock", "args": {"steps": 1}}))
        .await?;
    let forged = format!(
        "{}/mcp/tasks/{other}/stream?resume_token={token}",
        cluster.base_url
    );
    let response = cluster.http.get(&forged).send().await?;
    assert_eq!(response.status(), 401);
    let body: Value = response.json().await?;
    assert_eq!(body["error"]["code"], "invalid_resume_token");
    Ok(())
}

#[tokio::test]
async fn an_ended_task_streams_its_log_then_closes() -> anyhow::Result<()> {
    let cluster = Cluster::start(Options::default()).await?;
    let task = cluster
        .start_task(json!({"name": "t", "adapter": "mock", "args": {"steps": 2, "interval_ms": 1}}))
        .await?;
    let live = cluster.stream_to_end(&task).await?;
    let replay = cluster.stream_to_end(&task).await?;
    assert_eq!(live, replay);
    // Past the end: nothing, and the stream closes at once.
    let mut after = cluster
        .sse(&task, &format!("?since_seq={}", live.len()), None)
        .await?;
    let next = tokio::time::timeout(e2e::PATIENCE, after.next()).await?;
    assert!(next.is_none());
    // Out-of-range positions are bad input or simply past the end, never a crash.
    let mut far = cluster
        .sse(&task, &format!("?since_seq={}", u64::MAX), Some(u64::MAX))
        .await?;
    assert!(
        tokio::time::timeout(e2e::PATIENCE, far.next())
            .await?
            .is_none()
    );
    let negative = cluster
        .get(
            &format!("/mcp/tasks/{task}/stream?since_seq=-1"),
            Some(&cluster.api_key),
        )
        .await?;
    assert_eq!(negative.0, 400);
    assert_eq!(negative.1["error"]["code"], "invalid_query");
    Ok(())
}

#[tokio::test]
async fn an_idle_stream_gets_keep_alive_comments() -> anyhow::Result<()> {
    let cluster = Cluster::start(Options {
        workers: 0,
        ..Options::default()
    })
    .await?;
    let task = cluster
        .start_task(json!({"name": "idle", "adapter": "mock"}))
        .await?;
    let response = cluster
        .http
        .get(format!("{}/mcp/tasks/{task}/stream", cluster.base_url))
        .header("X-Api-Key", &cluster.api_key)
        .send()
        .await?;
    let mut body = response.bytes_stream();
    let mut text = String::new();
    // The task stays pending (no worker), so after `requested` only comments come.
    while !text.lines().any(|line| line.starts_with(':')) {
        let chunk = tokio::time::timeout(std::time::Duration::from_secs(20), body.next())
            .await?
            .expect("the stream stays open")?;
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(text.contains("event: requested"), "{text}");
    Ok(())
}

#[tokio::test]
async fn many_sse_clients_share_a_few_redis_connections() -> anyhow::Result<()> {
    let cluster = Cluster::start(Options::default()).await?;
    let mut redis = cluster.redis().await?;
    let connected = |info: String| -> u64 {
        info.lines()
            .find_map(|l| l.strip_prefix("connected_clients:"))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(u64::MAX)
    };
    let before = connected(
        redis::cmd("INFO")
            .arg("clients")
            .query_async(&mut redis)
            .await?,
    );
    let task = cluster
        .start_task(
            json!({"name": "shared", "adapter": "mock", "args": {"steps": 20, "interval_ms": 20}}),
        )
        .await?;
    let mut clients = Vec::new();
    for _ in 0..50 {
        clients.push(cluster.sse(&task, "", None).await?);
    }
    let during = connected(
        redis::cmd("INFO")
            .arg("clients")
            .query_async(&mut redis)
            .await?,
    );
    assert!(
        during <= before + 2,
        "{before} Redis connections before, {during} with 50 SSE clients"
    );
    for client in clients {
        let events = collect_to_end(client).await?;
        assert_eq!(events.len(), 23);
        assert_chain(&events);
    }
    Ok(())
}
