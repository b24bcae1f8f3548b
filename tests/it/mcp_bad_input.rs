//! Bad input to the MCP endpoint: each case gets an HTTP status, a JSON-RPC error or an
//! `isError` tool result that says what to fix, and changes nothing.

use e2e::mcp::{SESSION_REVISION, Session};
use e2e::{Cluster, Options};
use serde_json::{Value, json};

/// The message of an `isError` tool result, or a failure if the call succeeded.
fn tool_error(answer: &Value) -> String {
    assert_eq!(answer["result"]["isError"], true, "{answer}");
    answer["result"]["structuredContent"]["error"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn bad_input_gets_clear_errors_and_changes_nothing() -> anyhow::Result<()> {
    let cluster = Cluster::start(Options::default()).await?;
    let url = format!("{}/mcp", cluster.base_url);
    let http = e2e::http_client();
    let post = |key: Option<&str>, body: &str| {
        let mut request = http
            .post(&url)
            .header("Content-Type", "application/json")
            .header("Accept", "application/json, text/event-stream")
            .header("Mcp-Protocol-Version", SESSION_REVISION)
            .body(body.to_owned());
        if let Some(key) = key {
            request = request.header("X-Api-Key", key);
        }
        request.send()
    };
    let ping = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;

    let missing = post(None, ping).await?;
    assert_eq!(missing.status(), 401);
    assert_eq!(
        missing.json::<Value>().await?["error"]["code"],
        "missing_api_key"
    );
    let wrong = post(Some("axon_00000000000000000000000000000000"), ping).await?;
    assert_eq!(wrong.status(), 401);
    assert_eq!(
        wrong.json::<Value>().await?["error"]["code"],
        "invalid_api_key"
    );

    let foreign = http
        .post(&url)
        .header("X-Api-Key", &cluster.api_key)
        .header("Origin", "https://evil.example")
        .header("Content-Type", "application/json")
        .header("Accept", "application/json, text/event-stream")
        .body(ping)
        .send()
        .await?;
    assert_eq!(foreign.status(), 403, "a foreign Origin is refused");

    let malformed = post(Some(&cluster.api_key), "{not json").await?;
    assert_eq!(malformed.status(), 400);
    assert_eq!(malformed.json::<Value>().await?["error"]["code"], -32700);
    let batch = post(Some(&cluster.api_key), &format!("[{ping},{ping}]")).await?;
    assert_eq!(batch.status(), 400);
    let batch: Value = batch.json().await?;
    assert_eq!(batch["error"]["code"], -32600);
    assert!(
        batch["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("one message")
    );

    let session = Session::open(&url, &cluster.api_key).await?;
    let unknown = session.call_tool("launch_rockets", json!({})).await?;
    assert_eq!(
        unknown["error"]["code"], -32602,
        "an unknown tool is a protocol error"
    );
    let mistyped = session
        .call_tool("stream_task", json!({"task_id": 7}))
        .await?;
    assert_eq!(tool_error(&mistyped), "invalid_arguments");
    assert!(
        mistyped["result"]["content"][0]["text"]
            .as_str()
            .unwrap_or_default()
            .contains("stream_task"),
        "the message names the tool: {mistyped}"
    );
    let unexpected = session
        .call_tool("get_task_status", json!({"task_id": "x", "verbose": true}))
        .await?;
    assert_eq!(tool_error(&unexpected), "invalid_arguments");
    let not_uuid = session
        .call_tool("cancel_task", json!({"task_id": "nope"}))
        .await?;
    assert_eq!(tool_error(&not_uuid), "invalid_task_id");
    let too_long = session
        .call_tool(
            "stream_task",
            json!({"task_id": uuid::Uuid::now_v7(), "wait_s": 61}),
        )
        .await?;
    assert_eq!(tool_error(&too_long), "invalid_wait");
    let bad_adapter = session
        .call_tool("start_task", json!({"name": "x", "adapter": "teleport"}))
        .await?;
    assert_eq!(tool_error(&bad_adapter), "unknown_adapter");

    let beta = cluster.create_key("beta").await?;
    let theirs = cluster
        .post(
            "/mcp/start_task",
            Some(&beta),
            &json!({"name": "theirs", "adapter": "mock"}),
        )
        .await?
        .1["task_id"]
        .clone();
    for tool in ["get_task_status", "cancel_task", "verify_task"] {
        let answer = session.call_tool(tool, json!({"task_id": theirs})).await?;
        assert_eq!(tool_error(&answer), "task_not_found", "{tool}");
    }
    let read = session
        .call(&json!({"jsonrpc": "2.0", "id": 2, "method": "resources/read",
            "params": {"uri": format!("axontask://tasks/{}", theirs.as_str().unwrap_or_default())}}))
        .await?;
    assert!(
        read["error"].is_object(),
        "another tenant's resource is not found: {read}"
    );

    let reader = cluster.create_scoped_key("alpha", "tasks:read").await?;
    let read_only = Session::open(&url, &reader).await?;
    let refused = read_only
        .call_tool("start_task", json!({"name": "x", "adapter": "mock"}))
        .await?;
    assert_eq!(tool_error(&refused), "insufficient_scope");
    let refused = read_only
        .call_tool("cancel_task", json!({"task_id": theirs}))
        .await?;
    assert_eq!(tool_error(&refused), "insufficient_scope");

    let stolen = Session::open(&url, &beta).await?;
    let borrowed = http
        .post(&url)
        .header("X-Api-Key", &beta)
        .header("Mcp-Session-Id", &session.id)
        .header("Mcp-Protocol-Version", SESSION_REVISION)
        .header("Content-Type", "application/json")
        .header("Accept", "application/json, text/event-stream")
        .body(ping)
        .send()
        .await?;
    assert_eq!(
        borrowed.status(),
        404,
        "another tenant's session is not found"
    );
    drop(stolen);

    let (_, alpha_tasks) = cluster.get("/mcp/tasks", Some(&cluster.api_key)).await?;
    assert_eq!(
        alpha_tasks["tasks"],
        json!([]),
        "nothing was started for alpha"
    );
    Ok(())
}
