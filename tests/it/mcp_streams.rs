//! Long MCP calls: a `stream_task` call whose stream is cut because its process died
//! resumes with `Last-Event-ID` on a new process, and the client gets every message
//! exactly once; a long wait keeps sending progress, so hosts do not time it out.

use anyhow::Context;
use e2e::mcp::{Message, Session, sse_messages};
use e2e::{Cluster, Options, PATIENCE};
use futures::StreamExt;
use serde_json::json;

async fn next(
    messages: &mut (impl futures::Stream<Item = Message> + Unpin),
) -> anyhow::Result<Message> {
    tokio::time::timeout(PATIENCE, messages.next())
        .await
        .context("no message in time")?
        .context("the stream ended")
}

#[tokio::test]
async fn a_stream_cut_by_a_dead_process_resumes_on_a_new_one_exactly_once() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(Options::default()).await?;
    let first = cluster.spawn_role("mcp-1", "mcp").await?;
    let session = Session::open(&format!("http://127.0.0.1:{first}/mcp"), &cluster.api_key).await?;
    let task = cluster
        .start_task(json!({"name": "ticker", "adapter": "shell",
            "args": {"command": "sleep 1; for i in $(seq 1 16); do echo line $i; sleep 0.25; done"}}))
        .await?;
    // Wait for `requested` and `started`, so the call below waits for the output lines.
    e2e::eventually(|| async {
        cluster
            .get(&format!("/mcp/tasks/{task}/status"), Some(&cluster.api_key))
            .await
            .is_ok_and(|(_, status)| status["last_seq"] == 2)
    })
    .await?;
    let call = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {
        "name": "stream_task", "_meta": {"progressToken": "watch"},
        "arguments": {"task_id": task, "since_seq": 2, "wait_s": 60, "max_events": 1000}}});
    let mut messages = sse_messages(session.post(&call).await?);
    let mut received = Vec::new();
    while received
        .iter()
        .filter(|m: &&Message| m.json.is_some())
        .count()
        < 3
    {
        received.push(next(&mut messages).await?);
    }
    cluster.kill("mcp-1").await?;
    drop(messages);

    let second = cluster.spawn_role("mcp-2", "mcp").await?;
    let last = received.last().context("a message")?.id.clone();
    let resumed = session
        .resume(&format!("http://127.0.0.1:{second}/mcp"), &last)
        .await?;
    assert_eq!(resumed.status(), 200);
    let mut messages = sse_messages(resumed);
    let answer = loop {
        let message = next(&mut messages).await?;
        let done = message.json.as_ref().is_some_and(|m| m["id"] == 7);
        received.push(message);
        if done {
            break received
                .last()
                .and_then(|m| m.json.clone())
                .context("the answer")?;
        }
    };

    let mut ids: Vec<&str> = received.iter().map(|m| m.id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(
        ids.len(),
        received.len(),
        "every event id once: {received:?}"
    );
    let progress: Vec<f64> = received
        .iter()
        .filter_map(|m| m.json.as_ref())
        .filter(|m| m["method"] == "notifications/progress")
        .filter_map(|m| m["params"]["progress"].as_f64())
        .collect();
    let counted: Vec<f64> = (1..=progress.len()).map(|n| n as f64).collect();
    assert_eq!(
        progress, counted,
        "progress counts up by one, none twice, none lost"
    );
    let result = &answer["result"]["structuredContent"];
    let events = result["events"].as_array().context("events")?;
    let seqs: Vec<u64> = events.iter().filter_map(|e| e["seq"].as_u64()).collect();
    let expected: Vec<u64> = (3..3 + seqs.len() as u64).collect();
    assert_eq!(
        seqs, expected,
        "the answer holds every event after since_seq, once"
    );
    let (_, logged) = cluster
        .get(
            &format!("/mcp/tasks/{task}/events?since_seq=2"),
            Some(&cluster.api_key),
        )
        .await?;
    assert_eq!(
        events.as_slice(),
        &logged["events"].as_array().context("events")?[..events.len()],
        "the events equal the HTTP API's, chain included"
    );
    assert!(
        cluster.log("mcp-2").contains("taking over"),
        "the new process finished the call; its log:\n{}\nmessages: {received:#?}",
        cluster.log("mcp-2")
    );
    Ok(())
}

#[tokio::test]
async fn a_long_wait_sends_progress_at_least_every_five_seconds() -> anyhow::Result<()> {
    let cluster = Cluster::start(Options::default()).await?;
    let url = format!("{}/mcp", cluster.base_url);
    let session = Session::open(&url, &cluster.api_key).await?;
    let task = cluster
        .start_task(json!({"name": "quiet", "adapter": "shell", "args": {"command": "sleep 30"}}))
        .await?;
    e2e::eventually(|| async {
        cluster
            .get(&format!("/mcp/tasks/{task}/status"), Some(&cluster.api_key))
            .await
            .is_ok_and(|(_, status)| status["state"] == "running")
    })
    .await?;
    let (_, status) = cluster
        .get(&format!("/mcp/tasks/{task}/status"), Some(&cluster.api_key))
        .await?;
    let call = json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {
        "name": "stream_task", "_meta": {"progressToken": 1},
        "arguments": {"task_id": task, "since_seq": status["last_seq"], "wait_s": 11}}});
    let started = tokio::time::Instant::now();
    let mut messages = sse_messages(session.post(&call).await?);
    let mut beats = Vec::new();
    let answer = loop {
        let message = next(&mut messages).await?;
        let Some(json) = message.json else { continue };
        if json["method"] == "notifications/progress" {
            beats.push(started.elapsed());
            assert!(
                json["params"]["message"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("waiting"),
                "{json}"
            );
        } else if json["id"] == 3 {
            break json;
        }
    };
    let elapsed = started.elapsed();
    assert_eq!(
        beats.len(),
        2,
        "a progress notification every 4 s of an 11 s wait: {beats:?}"
    );
    let mut previous = std::time::Duration::ZERO;
    for beat in beats.iter().chain([&elapsed]) {
        assert!(
            beat.saturating_sub(previous) <= std::time::Duration::from_secs(5),
            "a silence longer than 5 s: {beats:?}, answered at {elapsed:?}"
        );
        previous = *beat;
    }
    assert_eq!(answer["result"]["structuredContent"]["events"], json!([]));
    assert_eq!(answer["result"]["structuredContent"]["state"], "running");
    cluster.cancel(&task).await?;
    Ok(())
}

#[tokio::test]
async fn an_ended_task_streams_to_done_whatever_the_since_seq() -> anyhow::Result<()> {
    let cluster = Cluster::start(Options::default()).await?;
    let session = Session::open(&format!("{}/mcp", cluster.base_url), &cluster.api_key).await?;
    let task = cluster
        .start_task(
            json!({"name": "short", "adapter": "mock", "args": {"steps": 2, "interval_ms": 1}}),
        )
        .await?;
    let all = e2e::collect_to_end(cluster.sse(&task, "", None).await?).await?;
    e2e::eventually(|| async {
        cluster
            .get(&format!("/mcp/tasks/{task}/status"), Some(&cluster.api_key))
            .await
            .is_ok_and(|(_, status)| status["state"] == "succeeded")
    })
    .await?;
    let everything = session
        .call_tool("stream_task", json!({"task_id": task, "wait_s": 60}))
        .await?;
    let batch = &everything["result"]["structuredContent"];
    assert_eq!(batch["events"], json!(all));
    assert_eq!(batch["done"], true);
    let last = all.len();
    let nothing_left = session
        .call_tool(
            "stream_task",
            json!({"task_id": task, "since_seq": last, "wait_s": 60}),
        )
        .await?;
    let batch = &nothing_left["result"]["structuredContent"];
    assert_eq!(batch["events"], json!([]), "nothing after the end");
    assert_eq!(
        batch["done"], true,
        "and the stream is done at once, not after 60 s"
    );
    assert_eq!(batch["state"], "succeeded");
    assert_eq!(batch["next_seq"], last);
    Ok(())
}
