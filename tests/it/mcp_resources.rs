//! Task resources over MCP: the templates, reading a task's status and NDJSON log, and on
//! 2025-11-25 sessions `notifications/resources/updated` while a subscribed task moves.

use anyhow::Context;
use e2e::mcp::{Session, sse_messages};
use e2e::{Cluster, Options, PATIENCE};
use futures::StreamExt;
use serde_json::{Value, json};

#[tokio::test]
async fn task_resources_read_and_notify() -> anyhow::Result<()> {
    let cluster = Cluster::start(Options::default()).await?;
    let session = Session::open(&format!("{}/mcp", cluster.base_url), &cluster.api_key).await?;
    let request = |id: u64, method: &str, params: Value| json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});

    let templates = session
        .call(&request(1, "resources/templates/list", json!({})))
        .await?;
    let uris: Vec<&str> = templates["result"]["resourceTemplates"]
        .as_array()
        .context("templates")?
        .iter()
        .filter_map(|t| t["uriTemplate"].as_str())
        .collect();
    assert_eq!(
        uris,
        [
            "axontask://tasks/{task_id}",
            "axontask://tasks/{task_id}/events"
        ]
    );

    let mut notifications = sse_messages(session.listen().await?);
    let task = cluster
        .start_task(json!({"name": "watched", "adapter": "shell",
            "args": {"command": "sleep 1; echo one; sleep 0.3; echo two"}}))
        .await?;
    let uri = format!("axontask://tasks/{task}");
    let subscribed = session
        .call(&request(2, "resources/subscribe", json!({"uri": uri})))
        .await?;
    assert!(subscribed["result"].is_object(), "{subscribed}");
    let mut updates = 0;
    loop {
        let message = tokio::time::timeout(PATIENCE, notifications.next())
            .await
            .context("no notification in time")?
            .context("the GET stream ended")?;
        let Some(json) = message.json else { continue };
        assert_eq!(json["method"], "notifications/resources/updated", "{json}");
        assert_eq!(json["params"]["uri"], uri.as_str());
        updates += 1;
        let read = session
            .call(&request(
                10 + updates,
                "resources/read",
                json!({"uri": uri}),
            ))
            .await?;
        let text = read["result"]["contents"][0]["text"]
            .as_str()
            .context("text")?;
        if serde_json::from_str::<Value>(text)?["state"] == "succeeded" {
            break;
        }
    }
    assert!(updates >= 2, "an update per change of the task: {updates}");

    let log = session
        .call(&request(
            3,
            "resources/read",
            json!({"uri": format!("{uri}/events")}),
        ))
        .await?;
    assert_eq!(
        log["result"]["contents"][0]["mimeType"],
        "application/x-ndjson"
    );
    let lines: Vec<Value> = log["result"]["contents"][0]["text"]
        .as_str()
        .context("ndjson")?
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let (_, page) = cluster
        .get(&format!("/mcp/tasks/{task}/events"), Some(&cluster.api_key))
        .await?;
    assert_eq!(
        Value::Array(lines),
        page["events"],
        "the NDJSON log is the task's log"
    );

    let listed = session
        .call(&request(4, "resources/list", json!({})))
        .await?;
    assert_eq!(listed["result"]["resources"][0]["uri"], uri.as_str());
    Ok(())
}
