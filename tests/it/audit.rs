//! Receipts, the tenant transparency log and `axontask verify` (§3.3, §3.3a, §3.10):
//! every terminal kind verifies from every source, and each kind of tampering is found
//! with its reason and seq.

use anyhow::Context;
use e2e::{Cluster, Options, is_terminal};
use serde_json::{Value, json};

/// Runs `axontask verify ARGS --json`: the exit code and the verdict.
async fn verify(cluster: &Cluster, args: &[&str]) -> anyhow::Result<(i32, Value)> {
    let mut all = vec!["verify", "--json"];
    all.extend_from_slice(args);
    let (code, out) = cluster.run(&all).await?;
    let json_end = out.rfind('}').map_or(0, |i| i + 1);
    let verdict = serde_json::from_str(&out[..json_end])
        .with_context(|| format!("verify printed no verdict (exit {code}):\n{out}"))?;
    Ok((code, verdict))
}

/// Polls `check` every 20 ms until it gives a value or [`e2e::PATIENCE`] runs out.
async fn found<T, F, Fut>(what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + e2e::PATIENCE;
    while tokio::time::Instant::now() < deadline {
        if let Some(value) = check().await {
            return Ok(value);
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    anyhow::bail!("{what}: not found within {:?}", e2e::PATIENCE)
}

/// Waits until the tenant's signed head holds `size` receipts; returns it.
async fn head_of_size(cluster: &Cluster, key: &str, size: u64) -> anyhow::Result<Value> {
    found(&format!("a signed head of size {size}"), || async move {
        let (_, body) = cluster.get("/api/log/head", Some(key)).await.ok()?;
        (body["head"]["tree_size"].as_u64()? >= size).then_some(body)
    })
    .await
}

/// Waits for the task's end.
async fn ended(cluster: &Cluster, task: &str) -> anyhow::Result<Vec<Value>> {
    let events = cluster.stream_to_end(task).await?;
    anyhow::ensure!(events.last().is_some_and(is_terminal), "{task} did not end");
    Ok(events)
}

fn failure(verdict: &Value) -> (&str, Option<u64>) {
    (
        verdict["failure"]["reason"].as_str().unwrap_or("none"),
        verdict["failure"]["seq"].as_u64(),
    )
}

#[tokio::test]
async fn every_terminal_kind_verifies_from_every_source() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(Options {
        workers: 0,
        ..Options::default()
    })
    .await?;
    let key = cluster.api_key.clone();
    // Canceled while pending: no worker runs yet.
    let pending = cluster
        .start_task(json!({"name": "p", "adapter": "mock", "args": {"steps": 1}}))
        .await?;
    assert_eq!(cluster.cancel(&pending).await?.0, 200);
    ended(&cluster, &pending).await?;
    let (status, body) = cluster.get(&format!("/mcp/tasks/{pending}/receipt"), Some(&key)).await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["receipt"]["state"], "canceled");
    cluster.spawn_role("worker-1", "worker").await?;

    let succeeded = cluster
        .start_task(json!({"name": "s", "adapter": "mock", "args": {"steps": 3, "interval_ms": 1}}))
        .await?;
    let failed = cluster
        .start_task(json!({"name": "f", "adapter": "mock", "args": {"steps": 3, "fail_at": 2, "interval_ms": 1}}))
        .await?;
    let timeout = cluster
        .start_task(json!({"name": "t", "adapter": "mock", "timeout_s": 1, "args": {"steps": 100, "interval_ms": 1000}}))
        .await?;
    let running = cluster
        .start_task(json!({"name": "c", "adapter": "mock", "args": {"steps": 100, "interval_ms": 1000}}))
        .await?;
    // While it runs, there is no receipt yet, and the answer says why.
    let (status, body) = cluster.get(&format!("/mcp/tasks/{running}/receipt"), Some(&key)).await?;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("task_not_finished")));
    // Tasks that end while the projector is down get their receipts when it is back.
    cluster.kill("projector").await?;
    assert_eq!(cluster.cancel(&running).await?.0, 200);
    cluster.spawn_role("projector", "projector").await?;
    for task in [&succeeded, &failed, &timeout, &running] {
        ended(&cluster, task).await?;
    }
    let head = head_of_size(&cluster, &key, 5).await?;
    assert_eq!(head["alg"], "Ed25519");

    let tasks = [
        (&pending, "canceled"),
        (&succeeded, "succeeded"),
        (&failed, "failed"),
        (&timeout, "timeout"),
        (&running, "canceled"),
    ];
    let dir = tempfile::tempdir()?;
    let jwks_url = format!("{}/.well-known/axontask/keys", cluster.base_url);
    for (task, state) in tasks {
        let api = ["--api", &cluster.base_url, "--key", &key, "--task", task];
        let (code, verdict) = verify(&cluster, &api).await?;
        assert_eq!((code, verdict["verdict"].as_str()), (0, Some("verified")), "{verdict:#}");
        assert_eq!(verdict["state"], state);

        let (code, verdict) = verify(&cluster, &["--database-url", &cluster.database_url, "--task", task]).await?;
        assert_eq!((code, verdict["verdict"].as_str()), (0, Some("verified")), "{verdict:#}");

        // Events from AXON_LOG; receipt, keys and log from the API.
        let mut nats = vec!["--nats", &cluster.nats_url];
        nats.extend_from_slice(&api);
        let (code, verdict) = verify(&cluster, &nats).await?;
        assert_eq!((code, verdict["verdict"].as_str()), (0, Some("verified")), "{verdict:#}");

        // An export, a saved receipt and the published keys, offline: all but the log.
        let export = dir.path().join(format!("{task}.ndjson"));
        let lines = cluster
            .http
            .get(format!("{}/mcp/tasks/{task}/events", cluster.base_url))
            .header("X-Api-Key", &key)
            .header("Accept", "application/x-ndjson")
            .send()
            .await?
            .text()
            .await?;
        std::fs::write(&export, lines)?;
        let (_, receipt) = cluster.get(&format!("/mcp/tasks/{task}/receipt"), Some(&key)).await?;
        let receipt_file = dir.path().join(format!("{task}.receipt.json"));
        std::fs::write(&receipt_file, receipt.to_string())?;
        let (export, receipt_file) = (export.display().to_string(), receipt_file.display().to_string());
        let offline = ["--file", &export, "--receipt", &receipt_file, "--keys", &jwks_url];
        let (code, verdict) = verify(&cluster, &offline).await?;
        assert_eq!((code, verdict["verdict"].as_str()), (3, Some("incomplete")), "{verdict:#}");
        assert_eq!(verdict["checks"][2]["status"], "skipped", "{verdict:#}");
        let mut with_log = offline.to_vec();
        with_log.extend_from_slice(&["--api", &cluster.base_url, "--key", &key]);
        let (code, verdict) = verify(&cluster, &with_log).await?;
        assert_eq!((code, verdict["verdict"].as_str()), (0, Some("verified")), "{verdict:#}");

        // The API's own verdict is the same.
        let (status, verdict) = cluster.get(&format!("/mcp/tasks/{task}/verify"), Some(&key)).await?;
        assert_eq!((status, verdict["verdict"].as_str()), (200, Some("verified")), "{verdict:#}");
    }

    // Every head is on AXON_HEADS too.
    let tenant = head["head"]["tenant_id"].as_str().context("tenant")?;
    let stream = cluster.js().await?.get_stream("AXON_HEADS").await?;
    let subject = format!("axon.loghead.{tenant}");
    let last: Value = found("the head of size 5 on AXON_HEADS", || async {
        let message = stream.get_last_raw_message_by_subject(&subject).await.ok()?;
        let head: Value = serde_json::from_slice(&message.payload).ok()?;
        (head["head"]["tree_size"] == 5).then_some(head)
    })
    .await?;
    assert_eq!(last, head_of_size(&cluster, &key, 5).await?);
    Ok(())
}
