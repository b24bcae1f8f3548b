//! Reads: read-your-writes before the projector, event pages and NDJSON, task lists.

use e2e::{Cluster, Options, assert_chain, collect_to_end, kinds};
use futures::StreamExt;
use serde_json::{Value, json};

#[tokio::test]
async fn a_started_task_is_readable_before_the_projector_reaches_it() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(Options::default()).await?;
    cluster.kill("projector").await?;
    let task = cluster
        .start_task(json!({"name": "early", "adapter": "mock", "args": {"steps": 2, "interval_ms": 1}, "timeout_s": 60}))
        .await?;
    let key = Some(cluster.api_key.as_str());
    let (status, body) = cluster
        .get(&format!("/mcp/tasks/{task}/status"), key)
        .await?;
    assert_eq!(status, 200);
    assert_eq!(body["state"], "pending");
    assert_eq!(body["name"], "early");
    assert_eq!(body["timeout_s"], 60);
    assert_eq!(body["last_seq"], 0);
    let (status, page) = cluster
        .get(&format!("/mcp/tasks/{task}/events"), key)
        .await?;
    assert_eq!((status, page), (200, json!({"events": [], "next_seq": 0})));

    // The stream waits; once the projector runs, everything arrives.
    let mut stream = cluster.sse(&task, "", None).await?;
    let nothing = tokio::time::timeout(std::time::Duration::from_millis(300), stream.next()).await;
    assert!(
        nothing.is_err(),
        "no event before the projector: {nothing:?}"
    );
    cluster.spawn_role("projector-2", "projector").await?;
    let events = collect_to_end(stream).await?;
    assert_eq!(
        kinds(&events),
        ["requested", "started", "progress", "progress", "succeeded"]
    );
    Ok(())
}

#[tokio::test]
async fn event_pages_and_ndjson_export() -> anyhow::Result<()> {
    let cluster = Cluster::start(Options::default()).await?;
    let task = cluster
        .start_task(
            json!({"name": "pages", "adapter": "mock", "args": {"steps": 5, "interval_ms": 1}}),
        )
        .await?;
    let streamed = cluster.stream_to_end(&task).await?;
    let key = Some(cluster.api_key.as_str());

    let mut paged: Vec<Value> = Vec::new();
    let mut since = 0;
    loop {
        let (status, page) = cluster
            .get(
                &format!("/mcp/tasks/{task}/events?since_seq={since}&limit=3"),
                key,
            )
            .await?;
        assert_eq!(status, 200);
        let events = page["events"].as_array().expect("events").clone();
        if events.is_empty() {
            assert_eq!(page["next_seq"], since);
            break;
        }
        since = page["next_seq"].as_u64().expect("next_seq");
        assert_eq!(json!(since), events.last().expect("a page")["seq"]);
        paged.extend(events);
    }
    assert_eq!(paged, streamed);

    let ndjson = cluster
        .http
        .get(format!(
            "{}/mcp/tasks/{task}/events?since_seq=2",
            cluster.base_url
        ))
        .header("X-Api-Key", &cluster.api_key)
        .header("Accept", "application/x-ndjson")
        .send()
        .await?;
    assert_eq!(ndjson.headers()["content-type"], "application/x-ndjson");
    let lines: Vec<Value> = ndjson
        .text()
        .await?
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    assert_eq!(lines, streamed[2..]);
    assert_chain(&streamed);
    Ok(())
}

#[tokio::test]
async fn lists_are_newest_first_filtered_and_paged() -> anyhow::Result<()> {
    let cluster = Cluster::start(Options::default()).await?;
    let mut ids = Vec::new();
    for n in 0..3 {
        let task = cluster
            .start_task(json!({"name": format!("t{n}"), "adapter": "mock", "args": {"steps": 1}}))
            .await?;
        cluster.stream_to_end(&task).await?;
        ids.push(task);
    }
    let failing = cluster
        .start_task(json!({"name": "bad", "adapter": "mock", "args": {"steps": 1, "fail_at": 1}}))
        .await?;
    cluster.stream_to_end(&failing).await?;
    let key = Some(cluster.api_key.as_str());

    let (_, first) = cluster
        .get("/mcp/tasks?state=succeeded&limit=2", key)
        .await?;
    let page_ids = |page: &Value| -> Vec<String> {
        page["tasks"]
            .as_array()
            .expect("tasks")
            .iter()
            .map(|t| t["task_id"].as_str().expect("id").to_owned())
            .collect()
    };
    assert_eq!(page_ids(&first), [ids[2].clone(), ids[1].clone()]);
    let cursor = first["next_cursor"].as_str().expect("a cursor");
    let (_, second) = cluster
        .get(
            &format!("/mcp/tasks?state=succeeded&limit=2&cursor={cursor}"),
            key,
        )
        .await?;
    assert_eq!(page_ids(&second), [ids[0].clone()]);
    assert_eq!(second["next_cursor"], Value::Null);
    let (_, failed) = cluster.get("/mcp/tasks?state=failed", key).await?;
    assert_eq!(page_ids(&failed), [failing]);
    assert_eq!(
        failed["tasks"][0]["outcome"],
        json!({"error": "mock failure at step 1"})
    );
    Ok(())
}
