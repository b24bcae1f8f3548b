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

    // A browser EventSource: no headers, the token in the query; it resumes after seq 2,
    // so it comes once seq 2 is logged (a position past the log is refused).
    e2e::eventually(|| async {
        cluster
            .get(&format!("/mcp/tasks/{task}/status"), Some(&cluster.api_key))
            .await
            .is_ok_and(|(_, status)| status["last_seq"].as_u64() >= Some(2))
    })
    .await?;
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

    // It does not show the tenant.
    let tenant = all[0]["tenant_id"].as_str().expect("tenant");
    let raw = base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, token)?;
    let tenant_bytes = uuid::Uuid::parse_str(tenant)?.into_bytes();
    assert!(
        !raw.windows(16).any(|w| w == tenant_bytes),
        "no tenant id inside"
    );
    assert!(!token.contains(&tenant.replace('-', "")));
    Ok(())
}

/// Opens `task`'s stream with `token` only; the status code and error code.
async fn with_token(cluster: &Cluster, task: &str, token: &str) -> anyhow::Result<(u16, Value)> {
    let url = format!(
        "{}/mcp/tasks/{task}/stream?resume_token={token}",
        cluster.base_url
    );
    let response = cluster.http.get(&url).send().await?;
    let status = response.status().as_u16();
    if status == 200 {
        return Ok((status, Value::Null));
    }
    Ok((status, response.json().await?))
}

#[tokio::test]
async fn a_resume_token_stops_working_when_it_expires_or_its_key_is_revoked() -> anyhow::Result<()>
{
    let cluster = Cluster::start(Options {
        env: vec![("RESUME_TOKEN_TTL_S", "2")],
        ..Options::default()
    })
    .await?;
    let second_key = cluster.create_key("alpha").await?;
    let mut tokens = Vec::new();
    for key in [&cluster.api_key, &second_key] {
        let (_, started) = cluster
            .post(
                "/mcp/start_task",
                Some(key),
                &json!({"name": "t", "adapter": "mock", "args": {"steps": 1, "interval_ms": 1}}),
            )
            .await?;
        let task = started["task_id"].as_str().unwrap_or_default().to_owned();
        cluster.stream_to_end(&task).await?;
        let token = started["resume_token"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert_eq!(with_token(&cluster, &task, &token).await?.0, 200);
        tokens.push((task, token));
    }
    // The second key is revoked: its tokens open nothing.
    sqlx::query("UPDATE api_keys SET revoked_at = now() WHERE key_hash = $1")
        .bind(shared::auth::hash_key(&second_key))
        .execute(&cluster.pg().await?)
        .await?;
    let (status, body) = with_token(&cluster, &tokens[1].0, &tokens[1].1).await?;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (401, json!("invalid_resume_token"))
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("revoked")
    );
    // RESUME_TOKEN_TTL_S (2 s) passes: the first token expires too.
    tokio::time::sleep(std::time::Duration::from_millis(2_100)).await;
    let (status, body) = with_token(&cluster, &tokens[0].0, &tokens[0].1).await?;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (401, json!("expired_resume_token"))
    );
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
    // Positions past the end, or out of range, are bad input, never a crash.
    for far in [live.len() as u64 + 1, u64::MAX] {
        let (status, body) = cluster
            .get(
                &format!("/mcp/tasks/{task}/stream?since_seq={far}"),
                Some(&cluster.api_key),
            )
            .await?;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"]["code"], "position_past_end");
    }
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

#[tokio::test]
async fn a_position_past_the_end_is_refused_and_moves_no_other_client() -> anyhow::Result<()> {
    let cluster = Cluster::start(Options::default()).await?;
    let task = cluster
        .start_task(
            json!({"name": "t", "adapter": "mock", "args": {"steps": 30, "interval_ms": 50}}),
        )
        .await?;
    let mut first = cluster.sse(&task, "", None).await?;
    let mut seen = Vec::new();
    while seen.len() < 3 {
        seen.push(
            tokio::time::timeout(e2e::PATIENCE, first.next())
                .await?
                .expect("an event"),
        );
    }
    let (status, body) = cluster
        .get(
            &format!("/mcp/tasks/{task}/stream?since_seq=1000"),
            Some(&cluster.api_key),
        )
        .await?;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "position_past_end");
    let header = cluster
        .http
        .get(format!("{}/mcp/tasks/{task}/stream", cluster.base_url))
        .header("X-Api-Key", &cluster.api_key)
        .header("Last-Event-ID", "1000")
        .send()
        .await?;
    assert_eq!(header.status(), 400);
    let session =
        e2e::mcp::Session::open(&format!("{}/mcp", cluster.base_url), &cluster.api_key).await?;
    let answer = session
        .call_tool("stream_task", json!({"task_id": task, "since_seq": 1000}))
        .await?;
    assert_eq!(
        answer["result"]["structuredContent"]["error"]["code"],
        "position_past_end"
    );
    seen.extend(collect_to_end(first).await?);
    assert_eq!(seen.len(), 33, "the first client still gets every event");
    Ok(())
}
