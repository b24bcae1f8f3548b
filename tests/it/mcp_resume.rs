//! Resumability of 2025-11-25 streams: a `stream_task` call whose stream is cut because its
//! process died resumes with `Last-Event-ID` on a new process, and the client gets every
//! message exactly once.

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
            "args": {"command": "sleep 0.5; for i in $(seq 1 16); do echo line $i; sleep 0.25; done"}}))
        .await?;
    let call = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {
        "name": "stream_task", "_meta": {"progressToken": "watch"},
        "arguments": {"task_id": task, "since_seq": 1, "wait_s": 60, "max_events": 1000}}});
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
    let expected: Vec<u64> = (2..2 + seqs.len() as u64).collect();
    assert_eq!(
        seqs, expected,
        "the answer holds every event after since_seq, once"
    );
    let (_, logged) = cluster
        .get(
            &format!("/mcp/tasks/{task}/events?since_seq=1"),
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
