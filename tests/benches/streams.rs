//! SSE rows: emit-to-client latency (a mock task, and a shell task printing 1,000 lines a
//! second), many clients on one fresh query-api process with its memory, and the backfill of
//! a resumed stream of a long task.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use e2e::Cluster;
use futures::StreamExt;
use serde_json::{Value, json};

use crate::Scale;

/// Emit-to-SSE latency with one client and with many.
pub async fn sse_rows(cluster: &mut Cluster, scale: Scale) -> anyhow::Result<()> {
    let base = cluster.base_url.clone();
    let steps = scale.pick(2_000, 500);
    let mock =
        json!({"name": "latency", "adapter": "mock", "args": {"steps": steps, "interval_ms": 1}});
    let latency = emit_to_sse(cluster, &base, 1, &mock, steps).await?;
    print_latency(
        &format!("emit → SSE latency, 1 client, {steps} events 1 ms apart"),
        latency,
    );
    // `sleep` is a process of its own: a line about every millisecond.
    let lines = scale.pick(3_000, 1_000);
    let command = format!("for i in $(seq 1 {lines}); do echo line $i; sleep 0.0005; done");
    let shell = json!({"name": "latency", "adapter": "shell", "args": {"command": command}});
    let latency = emit_to_sse(cluster, &base, 1, &shell, lines).await?;
    print_latency(
        &format!("emit → SSE latency, 1 client, shell task, {lines} lines ~1,000/s"),
        latency,
    );

    let clients = std::env::var("BENCH_SSE_CLIENTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(scale.pick(10_000, 1_000));
    // A query-api process of its own, so its memory is the clients'.
    cluster.spawn_role("sse", "query-api").await?;
    let pid = cluster.pid("sse").context("the sse process")?;
    let peak = Arc::new(AtomicU64::new(0));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = tokio::spawn({
        let (peak, sampling) = (peak.clone(), sampling.clone());
        async move {
            while sampling.load(Ordering::Relaxed) {
                peak.fetch_max(rss_kib(pid), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    });
    // 100,000 SSE frames a second in all, whatever the number of clients.
    let interval_ms = (clients as u64 / 100).max(1);
    let task = json!({"name": "fanout", "adapter": "mock", "args": {"steps": 100, "interval_ms": interval_ms}});
    let fanout = emit_to_sse(cluster, &cluster.url("sse"), clients, &task, 100).await?;
    sampling.store(false, Ordering::Relaxed);
    sampler.await?;
    print_latency(
        &format!("emit → SSE latency, {clients} clients, 100 events {interval_ms} ms apart"),
        fanout,
    );
    println!(
        "{:<58} {:>10.0} MiB (peak RSS of the query-api process)",
        format!("  memory with {clients} SSE clients on one query-api"),
        peak.load(Ordering::Relaxed) as f64 / 1024.0
    );
    cluster.kill("sse").await?;
    Ok(())
}

fn print_latency(what: &str, (p50, p99, max): (f64, f64, f64)) {
    println!("{what:<58} p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms");
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse().ok()
        })
        .unwrap_or(0)
}

/// The task `body` (whose output is `events` progress or output events), followed live by
/// `clients` SSE clients of the query-api at `base`; the latency of each such event at each
/// client is its arrival minus its `ts`. Every client gets every event, chained.
async fn emit_to_sse(
    cluster: &mut Cluster,
    base: &str,
    clients: usize,
    body: &Value,
    events: usize,
) -> anyhow::Result<(f64, f64, f64)> {
    // No worker until every client is connected, so all of them follow the task live.
    cluster.kill("worker-1").await?;
    let task = cluster.start_task(body.clone()).await?;
    let mut readers = Vec::new();
    for _ in 0..clients {
        let request = cluster
            .http
            .get(format!("{base}/mcp/tasks/{task}/stream"))
            .header("X-Api-Key", &cluster.api_key);
        let mut stream = e2e::open_sse(request).await?;
        readers.push(tokio::spawn(async move {
            let (mut latencies, mut all) = (Vec::new(), Vec::new());
            while let Some(event) = tokio::time::timeout(e2e::PATIENCE, stream.next()).await? {
                let arrived = chrono::Utc::now();
                let ts = event["ts"].as_str().context("ts")?;
                let sent = chrono::DateTime::parse_from_rfc3339(ts)?;
                if matches!(
                    event["kind"].as_str(),
                    Some("progress" | "stdout" | "stderr")
                ) {
                    let micros = (arrived - sent.with_timezone(&chrono::Utc))
                        .num_microseconds()
                        .unwrap_or(i64::MAX);
                    latencies.push(micros as f64 / 1_000.0);
                }
                let end = e2e::is_terminal(&event);
                all.push(event);
                if end {
                    break;
                }
            }
            e2e::assert_chain(&all);
            anyhow::Ok(latencies)
        }));
    }
    cluster.spawn_role("worker-1", "worker").await?;
    let mut all = Vec::new();
    for reader in readers {
        let latencies = reader.await??;
        anyhow::ensure!(
            latencies.len() == events,
            "a client got {} of {events} events",
            latencies.len()
        );
        all.extend(latencies);
    }
    Ok(percentiles(all))
}

/// p50, p99 and max.
fn percentiles(mut all: Vec<f64>) -> (f64, f64, f64) {
    all.sort_by(f64::total_cmp);
    let at = |q: f64| all[((all.len() - 1) as f64 * q) as usize];
    (at(0.5), at(0.99), at(1.0))
}

/// A mock task of 10,000 events, ended; then streams of it from the start (a client
/// resuming with `Last-Event-ID: 0`): from the request to its last event received, by curl.
pub async fn backfill_row(cluster: &Cluster, scale: Scale) -> anyhow::Result<()> {
    const STEPS: usize = 10_000;
    let task = cluster
        .start_task(
            json!({"name": "long", "adapter": "mock", "args": {"steps": STEPS, "interval_ms": 0}}),
        )
        .await?;
    e2e::collect_to_end(cluster.sse(&task, "", None).await?).await?;
    let mut took = Vec::new();
    for _ in 0..scale.pick(20, 5) {
        // Read by curl, a client faster than the server (as wrk is for the load rows), and
        // timed to the end of the body (the server ends it after the terminal event); the
        // events are parsed and checked after.
        let started = Instant::now();
        let curl = tokio::process::Command::new("curl")
            .args(["-sS", "--fail", "-N", "-H"])
            .arg(format!("X-Api-Key: {}", cluster.api_key))
            .args(["-H", "Last-Event-ID: 0"])
            .arg(format!("{}/mcp/tasks/{task}/stream", cluster.base_url))
            .output()
            .await
            .context("running curl")?;
        took.push(started.elapsed().as_secs_f64() * 1000.0);
        anyhow::ensure!(curl.status.success(), "curl failed: {curl:?}");
        let events: Vec<Value> = String::from_utf8(curl.stdout)?
            .lines()
            .filter_map(|line| line.strip_prefix("data: "))
            .map(serde_json::from_str)
            .collect::<Result<_, _>>()?;
        anyhow::ensure!(events.len() == STEPS + 3, "{} events", events.len());
        anyhow::ensure!(events.last().is_some_and(e2e::is_terminal), "no end");
        e2e::assert_chain(&events);
    }
    let (p50, _, max) = percentiles(took);
    println!(
        "{:<58} p50 {p50:.1} ms, max {max:.1} ms",
        "resume backfill, 10,000-event task, request → last event"
    );
    Ok(())
}
