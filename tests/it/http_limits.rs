//! Limits of the HTTP front: open SSE streams per tenant.

use e2e::{Cluster, Options};
use serde_json::json;

#[tokio::test]
async fn a_tenant_past_its_open_streams_gets_429_with_retry_after() -> anyhow::Result<()> {
    let cluster = Cluster::start(Options {
        env: vec![("SSE_MAX_STREAMS_PER_TENANT", "2")],
        ..Options::default()
    })
    .await?;
    let task = cluster
        .start_task(
            json!({"name": "long", "adapter": "mock", "args": {"steps": 1, "interval_ms": 600000}}),
        )
        .await?;
    let first = cluster.sse(&task, "", None).await?;
    let _second = cluster.sse(&task, "", None).await?;
    let url = format!("{}/mcp/tasks/{task}/stream", cluster.base_url);
    let third = cluster
        .http
        .get(&url)
        .header("X-Api-Key", &cluster.api_key)
        .send()
        .await?;
    assert_eq!(third.status(), 429);
    assert_eq!(
        third
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("5")
    );
    let body: serde_json::Value = third.json().await?;
    assert_eq!(body["error"]["code"], "too_many_streams");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("SSE_MAX_STREAMS_PER_TENANT")
    );

    // Another tenant is not affected.
    let beta = cluster.create_key("beta").await?;
    let (_, theirs) = cluster
        .post(
            "/mcp/start_task",
            Some(&beta),
            &json!({"name": "t", "adapter": "mock", "args": {"steps": 1, "interval_ms": 600000}}),
        )
        .await?;
    let theirs = theirs["task_id"].as_str().unwrap_or_default();
    let response = cluster
        .http
        .get(format!("{}/mcp/tasks/{theirs}/stream", cluster.base_url))
        .header("X-Api-Key", &beta)
        .send()
        .await?;
    assert_eq!(response.status(), 200);

    // A stream that ends gives its slot back.
    drop(first);
    e2e::eventually(|| async {
        cluster
            .http
            .get(&url)
            .header("X-Api-Key", &cluster.api_key)
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await?;
    Ok(())
}
