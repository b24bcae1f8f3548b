//! Bad input gets the error body of §3.7 with the right status, and writes nothing.

use e2e::{Cluster, Options};
use serde_json::{Value, json};

async fn axon_messages(cluster: &Cluster) -> anyhow::Result<u64> {
    let js = cluster.js().await?;
    Ok(js.get_stream("AXON").await?.info().await?.state.messages)
}

fn assert_error(answer: (u16, Value), status: u16, code: &str) {
    assert_eq!(answer.0, status, "{}", answer.1);
    assert_eq!(answer.1["error"]["code"], code, "{}", answer.1);
    let message = answer.1["error"]["message"].as_str().expect("a message");
    assert!(
        message.len() > 10,
        "the message says how to fix it: {message}"
    );
}

#[tokio::test]
async fn bad_requests_get_clear_errors_and_change_nothing() -> anyhow::Result<()> {
    let cluster = Cluster::start(Options {
        adapters: "mock",
        ..Options::default()
    })
    .await?;
    let key = Some(cluster.api_key.as_str());
    let before = axon_messages(&cluster).await?;
    let start = |body: Value| {
        let cluster = &cluster;
        async move { cluster.post("/mcp/start_task", key, &body).await }
    };

    let raw = cluster
        .http
        .post(format!("{}/mcp/start_task", cluster.base_url))
        .header("X-Api-Key", &cluster.api_key)
        .header("Content-Type", "application/json")
        .body("{\"name\": ")
        .send()
        .await?;
    assert_error(
        (raw.status().as_u16(), raw.json().await?),
        400,
        "malformed_json",
    );
    assert_error(
        start(json!({"name": "x", "adapter": "teleport"})).await?,
        400,
        "unknown_adapter",
    );
    let disabled =
        start(json!({"name": "x", "adapter": "shell", "args": {"command": "ls"}})).await?;
    assert!(
        disabled.1["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("ADAPTERS_ENABLED"))
    );
    assert_error(disabled, 400, "adapter_disabled");
    assert_error(
        start(json!({"name": "x", "adapter": "mock", "bogus": 1})).await?,
        400,
        "invalid_body",
    );
    assert_error(
        start(json!({"name": "x", "adapter": "mock", "args": {"steps": 0.5}})).await?,
        400,
        "invalid_args",
    );
    for args in [
        json!({"message": "m".repeat(1_001)}),
        json!({"steps": 100_001}),
        json!({"interval_ms": 3_600_001}),
    ] {
        assert_error(
            start(json!({"name": "x", "adapter": "mock", "args": args})).await?,
            400,
            "invalid_args",
        );
    }
    assert_error(
        start(json!({"name": "", "adapter": "mock"})).await?,
        400,
        "invalid_name",
    );
    assert_error(
        start(json!({"name": "x", "adapter": "mock", "timeout_s": 0})).await?,
        400,
        "invalid_timeout",
    );
    for priority in [json!(10), json!(-1), json!("high"), json!(1.5)] {
        let (status, body) =
            start(json!({"name": "x", "adapter": "mock", "priority": priority})).await?;
        assert_eq!(status, 400, "{priority}: {body}");
        let code = body["error"]["code"].as_str().unwrap_or_default();
        assert!(
            ["invalid_priority", "invalid_body"].contains(&code),
            "{priority}: {body}"
        );
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .contains("priority"),
            "{priority}: {body}"
        );
    }
    let huge = json!({"name": "x", "adapter": "mock", "args": {"message": "x".repeat(100 * 1024)}});
    assert_error(start(huge).await?, 413, "body_too_large");

    assert_error(
        cluster.post("/mcp/start_task", None, &json!({})).await?,
        401,
        "missing_api_key",
    );
    let wrong = "axon_00000000000000000000000000000000";
    assert_error(
        cluster
            .post("/mcp/start_task", Some(wrong), &json!({}))
            .await?,
        401,
        "invalid_api_key",
    );
    assert_error(
        cluster
            .post("/mcp/start_task", Some("nonsense"), &json!({}))
            .await?,
        401,
        "invalid_api_key",
    );
    let reader = cluster.create_scoped_key("alpha", "tasks:read").await?;
    let reader = reader.as_str();
    let answer = cluster
        .post(
            "/mcp/start_task",
            Some(reader),
            &json!({"name": "x", "adapter": "mock"}),
        )
        .await?;
    assert_error(answer, 403, "insufficient_scope");

    assert_error(
        cluster.get("/mcp/tasks/not-a-uuid/status", key).await?,
        400,
        "invalid_task_id",
    );
    assert_error(
        cluster
            .post("/mcp/tasks/42/cancel", key, &json!({}))
            .await?,
        400,
        "invalid_task_id",
    );
    let unknown = uuid::Uuid::now_v7();
    assert_error(
        cluster
            .get(&format!("/mcp/tasks/{unknown}/status"), key)
            .await?,
        404,
        "task_not_found",
    );
    assert_error(
        cluster
            .post(&format!("/mcp/tasks/{unknown}/cancel"), key, &json!({}))
            .await?,
        404,
        "task_not_found",
    );
    assert_error(
        cluster.get("/mcp/nothing-here", key).await?,
        404,
        "route_not_found",
    );
    assert_error(
        cluster.get("/mcp/tasks?limit=0", key).await?,
        400,
        "invalid_limit",
    );
    assert_error(
        cluster.get("/mcp/tasks?state=sleeping", key).await?,
        400,
        "invalid_state",
    );

    assert_eq!(
        axon_messages(&cluster).await?,
        before,
        "no bad request published anything"
    );
    let pool = cluster.pg().await?;
    let (tasks,): (i64,) = sqlx::query_as("SELECT count(*) FROM tasks")
        .fetch_one(&pool)
        .await?;
    assert_eq!(tasks, 0);
    Ok(())
}

#[tokio::test]
async fn another_tenant_s_task_is_a_404_everywhere() -> anyhow::Result<()> {
    let cluster = Cluster::start(Options::default()).await?;
    let task = cluster
        .start_task(json!({"name": "mine", "adapter": "mock", "args": {"steps": 1}}))
        .await?;
    cluster.stream_to_end(&task).await?;
    let beta = cluster.create_key("beta").await?;
    let theirs = Some(beta.as_str());
    for path in ["status", "events"] {
        assert_error(
            cluster
                .get(&format!("/mcp/tasks/{task}/{path}"), theirs)
                .await?,
            404,
            "task_not_found",
        );
    }
    assert_error(
        cluster
            .get(&format!("/mcp/tasks/{task}/stream"), theirs)
            .await?,
        404,
        "task_not_found",
    );
    assert_error(
        cluster
            .post(&format!("/mcp/tasks/{task}/cancel"), theirs, &json!({}))
            .await?,
        404,
        "task_not_found",
    );
    let (status, list) = cluster.get("/mcp/tasks", theirs).await?;
    assert_eq!(
        (status, list),
        (200, json!({"tasks": [], "next_cursor": null}))
    );
    let (_, mine) = cluster.get("/mcp/tasks", Some(&cluster.api_key)).await?;
    assert_eq!(mine["tasks"][0]["task_id"], json!(task));
    Ok(())
}
