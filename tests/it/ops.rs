//! What operators rely on: health, readiness, metrics, configuration errors, shutdown.

use std::time::Duration;

use e2e::{Cluster, Options};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::json;

#[tokio::test]
async fn health_readiness_and_metrics() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(Options::default()).await?;
    let task = cluster
        .start_task(json!({"name": "m", "adapter": "mock", "args": {"steps": 2, "interval_ms": 1}}))
        .await?;
    cluster.stream_to_end(&task).await?;
    let http = cluster.http.clone();
    let get = |url: String| {
        let http = http.clone();
        async move {
            let response = http.get(url).send().await?;
            anyhow::Ok((response.status().as_u16(), response.text().await?))
        }
    };
    assert_eq!(
        get(format!("{}/healthz", cluster.base_url)).await?,
        (200, r#"{"status":"ok"}"#.into())
    );
    // Metrics are on METRICS_ADDR (loopback), not on the public port.
    let (status, _) = get(format!("{}/metrics", cluster.base_url)).await?;
    assert_eq!(status, 404);
    let (status, api) = get(cluster.metrics_url("api")).await?;
    assert_eq!(status, 200);
    assert!(api.contains("axon_sse_clients"), "{api}");
    assert!(api.contains(r#"axon_tasks{state="succeeded"} 1"#), "{api}");
    let (_, projector) = get(cluster.metrics_url("projector")).await?;
    assert!(
        projector.contains("axon_events_projected_total 5"),
        "{projector}"
    );
    assert!(projector.contains("axon_projector_lag"), "{projector}");

    cluster.kill_redis().await?;
    let (status, body) = get(format!("{}/readyz", cluster.base_url)).await?;
    assert_eq!(status, 503);
    let body: serde_json::Value = serde_json::from_str(&body)?;
    assert_eq!(body["error"]["code"], "service_unavailable");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("redis"))
    );
    Ok(())
}

#[tokio::test]
async fn a_bad_setting_stops_start_up_naming_the_variable() -> anyhow::Result<()> {
    let cluster = Cluster::start(Options {
        workers: 0,
        ..Options::default()
    })
    .await?;
    for (var, value) in [
        ("API_PORT", "eighty"),
        ("ADAPTERS_ENABLED", "mock,podman"),
        ("HMAC_SECRET", "short"),
    ] {
        let (ok, stderr) = cluster.run_with_env(&["serve"], &[(var, value)]).await?;
        assert!(!ok);
        assert!(stderr.contains(var), "{stderr}");
    }
    let (ok, stderr) = cluster
        .run_with_env(
            &["keys", "create", "--tenant", "t", "--scopes", "root"],
            &[],
        )
        .await?;
    assert!(!ok);
    assert!(stderr.contains("unknown scope 'root'"), "{stderr}");
    let (ok, stderr) = cluster
        .run_with_env(&["migrate"], &[("DATABASE_URL", "mysql://x")])
        .await?;
    assert!(!ok);
    assert!(stderr.contains("DATABASE_URL"), "{stderr}");
    // Only a worker does without Postgres.
    let (ok, stderr) = cluster
        .run_with_env(
            &["serve", "--roles", "query-api"],
            &[("DATABASE_URL", ""), ("API_PORT", "0")],
        )
        .await?;
    assert!(!ok);
    assert!(stderr.contains("DATABASE_URL is not set"), "{stderr}");
    // A shell work directory someone else controls is refused.
    let foreign = tempfile::tempdir()?;
    std::os::unix::fs::chown(foreign.path(), Some(65534), None)?;
    let work_dir = foreign.path().join("tasks");
    let (ok, stderr) = cluster
        .run_with_env(
            &["serve", "--roles", "worker"],
            &[
                ("SHELL_WORK_DIR", work_dir.to_str().unwrap_or_default()),
                ("API_PORT", "0"),
                ("METRICS_ADDR", "off"),
            ],
        )
        .await?;
    assert!(!ok);
    assert!(
        stderr.contains("SHELL_WORK_DIR") && stderr.contains("owned by root"),
        "{stderr}"
    );
    // A secret everyone can read in .env.example or docker-compose.yml is refused.
    let (ok, stderr) = cluster
        .run_with_env(
            &["serve", "--roles", "command-api"],
            &[("HMAC_SECRET", "change-me-change-me-change-me-change-me")],
        )
        .await?;
    assert!(!ok);
    assert!(
        stderr.contains("HMAC_SECRET") && stderr.contains("example value"),
        "{stderr}"
    );
    Ok(())
}

#[tokio::test]
async fn sigterm_hands_running_tasks_back_and_exits() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(Options::default()).await?;
    let task = cluster
        .start_task(
            json!({"name": "s", "adapter": "shell", "args": {"command": "echo go; sleep 30"}}),
        )
        .await?;
    let mut stream = cluster.sse(&task, "", None).await?;
    let mut seen = Vec::new();
    while seen
        .last()
        .is_none_or(|e: &serde_json::Value| e["kind"] != "stdout")
    {
        seen.push(
            tokio::time::timeout(e2e::PATIENCE, futures::StreamExt::next(&mut stream))
                .await?
                .expect("an event"),
        );
    }
    let mut worker = cluster.take("worker-1").expect("worker-1");
    let pid = i32::try_from(worker.id().expect("running"))?;
    kill(Pid::from_raw(pid), Signal::SIGTERM)?;
    let status = tokio::time::timeout(Duration::from_secs(10), worker.wait()).await??;
    assert!(status.success(), "{status}");
    // The command went back to the stream: the next worker runs the task again.
    cluster.spawn_role("worker-2", "worker").await?;
    let (status, _) = cluster.cancel(&task).await?;
    assert_eq!(status, 200);
    seen.extend(e2e::collect_to_end(stream).await?);
    e2e::assert_chain(&seen);
    assert_eq!(seen.last().expect("events")["kind"], "canceled");
    Ok(())
}

#[tokio::test]
async fn sigterm_ends_open_streams_at_once() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(Options::default()).await?;
    let task = cluster
        .start_task(json!({"name": "s", "adapter": "shell", "args": {"command": "sleep 30"}}))
        .await?;
    let mut stream = cluster.sse(&task, "", None).await?;
    let first = tokio::time::timeout(e2e::PATIENCE, futures::StreamExt::next(&mut stream)).await?;
    assert!(first.is_some(), "the stream is open");
    let session =
        e2e::mcp::Session::open(&format!("{}/mcp", cluster.base_url), &cluster.api_key).await?;
    let mut mcp = e2e::mcp::sse_messages(session.listen().await?);
    let mut api = cluster.take("api").expect("api");
    let pid = i32::try_from(api.id().expect("running"))?;
    let asked = tokio::time::Instant::now();
    kill(Pid::from_raw(pid), Signal::SIGTERM)?;
    let status = tokio::time::timeout(e2e::PATIENCE, api.wait()).await??;
    assert!(status.success(), "{status}");
    assert!(
        asked.elapsed() < Duration::from_secs(3),
        "open streams held the shutdown for {:?}",
        asked.elapsed()
    );
    // Both streams end (after what was already on its way); a timeout here fails the test.
    while tokio::time::timeout(e2e::PATIENCE, futures::StreamExt::next(&mut stream))
        .await?
        .is_some()
    {}
    while tokio::time::timeout(e2e::PATIENCE, futures::StreamExt::next(&mut mcp))
        .await?
        .is_some()
    {}
    cluster.cancel(&task).await.ok();
    Ok(())
}
