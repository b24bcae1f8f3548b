//! The pipeline benchmark: raw NATS JetStream, Redis, Postgres and axum speed, then
//! AxonTask's short tasks, event throughput, `start_task` latency, emit-to-SSE latency, SSE
//! fan-out, resume backfill, receipts and the MCP server, all in one run on one machine, so
//! the figures compare as ratios. Every stream read is checked whole (each chain verified,
//! no event lost or repeated). Run `scripts/bench.sh` (`--quick` for about a minute).

use std::time::Instant;

use anyhow::Context;
mod containers;
mod cpu;
mod floor;
mod load;
mod raw;
mod streams;

use e2e::mcp::{Session, sse_messages};
use e2e::{Cluster, Options};
use futures::StreamExt;
use serde_json::json;

/// How large a run is: the full one, or `--quick` (`BENCH_QUICK=1`).
#[derive(Clone, Copy)]
pub struct Scale {
    /// Whether this is the quick run.
    pub quick: bool,
}

impl Scale {
    /// `full` in the full run, `quick` in the quick one.
    pub fn pick(self, full: usize, quick: usize) -> usize {
        if self.quick { quick } else { full }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let scale = Scale {
        quick: std::env::var("BENCH_QUICK").is_ok_and(|q| q == "1"),
    };
    let mut cluster = Cluster::start(Options {
        release: true,
        // The containers rows run docker tasks on the engine bench.sh starts.
        adapters: "mock,shell,docker",
        // Room for the 200 tasks at once of the many-tasks row.
        env: vec![("WORKER_CONCURRENCY", "256")],
        ..Options::default()
    })
    .await?;
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    println!(
        "AxonTask pipeline benchmark: {cores} cores, every service on this machine, release build{}",
        if scale.quick { " (quick run)" } else { "" }
    );
    println!();

    let seconds = scale.pick(5, 2) as u64;
    let raw = raw::measure(&cluster, scale.pick(100_000, 20_000), seconds).await?;
    let nats = raw.publish;
    row(
        "raw JetStream publish, 4,000 acks in flight",
        nats,
        "msg/s",
        None,
    );
    row("raw JetStream pull", raw.pull, "msg/s", None);
    row(
        "raw Redis XADD, pipelines of 1,000",
        raw.xadd,
        "entries/s",
        None,
    );
    row(
        "raw Postgres INSERT, 1,000-row transactions",
        raw.insert,
        "rows/s",
        None,
    );
    row(
        "raw axum handler, wrk 32 conns",
        raw.http.per_second,
        "requests/s",
        None,
    );
    println!(
        "{:<58} p50 {:.2} ms, p99 {:.2} ms",
        "raw axum handler, one wrk connection",
        ms(raw.http_one.p50),
        ms(raw.http_one.p99)
    );
    let floor = floor::measure(&cluster, scale.pick(100_000, 20_000)).await?;
    println!(
        "{:<58} {floor:>10.0} events/s ({:.2} × raw JetStream publish)",
        "raw event pipeline: bare clients, no AxonTask logic",
        floor / nats
    );
    let versus = Versus {
        publish: nats,
        floor,
    };

    // `BENCH_ONLY=receipts,sse` runs only those sections (short, latency, events, backfill,
    // shell, many, containers, sse, receipts, mcp, limits) after the raw rows.
    let only = std::env::var("BENCH_ONLY").ok();
    let wants = |name: &str| {
        only.as_deref()
            .is_none_or(|only| only.split(',').any(|o| o.trim() == name))
    };
    if wants("short") {
        short_rows(&cluster, &raw, seconds).await?;
    }
    if wants("latency") {
        latency_rows(&cluster, &raw, seconds).await?;
    }
    if wants("events") {
        let tasks = scale.pick(16, 4);
        let before = cpu::read(&cluster);
        let (took, rate) = many_mock_tasks(&cluster, tasks, 3_000).await?;
        let what = format!(
            "{tasks} mock tasks × 3,000 steps at once ({:.1} s)",
            took.as_secs_f64()
        );
        row(&what, rate, "events/s", Some(versus));
        cpu::print_split(&cpu::read(&cluster), &before);
    }
    if wants("backfill") {
        streams::backfill_row(&cluster, scale).await?;
    }
    if wants("shell") {
        shell_rows(&cluster, versus, scale).await?;
    }
    if wants("many") {
        many_row(&cluster, versus, scale).await?;
    }
    if wants("containers") {
        containers::rows(&cluster, versus, scale).await?;
    }
    if wants("sse") {
        streams::sse_rows(&mut cluster, scale).await?;
    }
    if wants("receipts") {
        receipts_rows(&cluster, scale).await?;
    }
    if wants("mcp") {
        mcp_rows(&mut cluster, scale).await?;
    }
    if wants("limits") {
        limits_rows(&mut cluster, scale).await?;
    }
    Ok(())
}

/// Milliseconds.
fn ms(duration: std::time::Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// Shell tasks printing many lines.
async fn shell_rows(cluster: &Cluster, versus: Versus, scale: Scale) -> anyhow::Result<()> {
    let lines = scale.pick(100_000, 20_000);
    let one = chatty_tasks(cluster, 1, lines).await?;
    let what = format!("1 shell task × {lines} lines, start → last SSE event");
    row(&what, one, "events/s", Some(versus));
    let (tasks, lines) = (scale.pick(10, 4), scale.pick(20_000, 5_000));
    let ten = chatty_tasks(cluster, tasks, lines).await?;
    let what = format!("{tasks} shell tasks × {lines} lines, one SSE client each");
    row(&what, ten, "events/s", Some(versus));
    Ok(())
}

/// Many tasks at once on one worker.
async fn many_row(cluster: &Cluster, versus: Versus, scale: Scale) -> anyhow::Result<()> {
    let tasks = scale.pick(200, 50);
    let (took, rate) = many_mock_tasks(cluster, tasks, 500).await?;
    let what = format!(
        "{tasks} mock tasks × 500 steps at once, one worker ({:.1} s)",
        took.as_secs_f64()
    );
    row(&what, rate, "events/s", Some(versus));
    Ok(())
}

/// Receipts and the tenant log.
async fn receipts_rows(cluster: &Cluster, scale: Scale) -> anyhow::Result<()> {
    let tasks = scale.pick(10_000, 2_000);
    let audit = receipts(cluster, tasks).await?;
    row(
        &format!(
            "{tasks} one-step mock tasks, start → receipt ({:.1} s)",
            audit.took.as_secs_f64()
        ),
        audit.rate,
        "tasks/s",
        None,
    );
    println!(
        "{:<58} {:>9.1} % of the projector's batch time (at most {:.1} %)",
        "  receipts and heads (build, sign, tree, rows)",
        100.0 * audit.share.0,
        100.0 * audit.share.1
    );
    for (what, (p50, p99)) in [
        (
            "  inclusion proof, tree of all receipts so far",
            audit.inclusion,
        ),
        ("  consistency proof, random sizes", audit.consistency),
    ] {
        println!("{what:<58} p50 {p50:.2} ms, p99 {p99:.2} ms");
    }
    Ok(())
}

/// MCP round trips and progress latency.
async fn mcp_rows(cluster: &mut Cluster, scale: Scale) -> anyhow::Result<()> {
    for sessions in [1, 8] {
        let calls = scale.pick(250, 50);
        let (rate, p50, p99) = mcp_round_trips(cluster, sessions, calls).await?;
        let what = format!("MCP stream_task round trips, {sessions} session(s), answer at once");
        println!("{what:<58} {rate:>10.0} calls/s, p50 {p50:.2} ms, p99 {p99:.2} ms");
    }
    let steps = scale.pick(2_000, 500);
    let progress = emit_to_progress(cluster, steps).await?;
    println!(
        "{:<58} p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        format!("emit → MCP progress latency, {steps} events 1 ms apart"),
        progress.0,
        progress.1,
        progress.2
    );
    Ok(())
}

/// What the receipts row measured.
struct Receipts {
    took: std::time::Duration,
    rate: f64,
    /// Receipts' and heads' share of the projector's time in batches, and its upper bound.
    share: (f64, f64),
    /// p50 and p99 of one request, in ms.
    inclusion: (f64, f64),
    consistency: (f64, f64),
}

/// `tasks` one-step mock tasks started by 16 clients at once; from the first start until
/// every one has its receipt. Then the projector's time split (from its metrics), and the
/// latency of inclusion and consistency proofs in the tenant log they filled.
async fn receipts(cluster: &Cluster, tasks: usize) -> anyhow::Result<Receipts> {
    let pool = cluster.pg().await?;
    let count = || async {
        let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM task_receipts")
            .fetch_one(&pool)
            .await?;
        anyhow::Ok(usize::try_from(n)?)
    };
    let before = count().await?;
    // The tenant's log so far (other tenants' receipts are in other logs).
    let tree_size = || async {
        let (_, head) = cluster.get("/api/log/head", Some(&cluster.api_key)).await?;
        anyhow::Ok(head["head"]["tree_size"].as_u64().unwrap_or(0) as usize)
    };
    let logged = tree_size().await?;
    let metrics = projector_seconds(cluster).await?;
    let started = Instant::now();
    let mut starters = Vec::new();
    for _ in 0..16 {
        let (http, url, key) = (
            cluster.http.clone(),
            format!("{}/mcp/start_task", cluster.base_url),
            cluster.api_key.clone(),
        );
        starters.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for _ in 0..tasks / 16 {
                let body = json!({"name": "receipt", "adapter": "mock", "args": {"steps": 1, "interval_ms": 0}});
                let answer: serde_json::Value = http
                    .post(&url)
                    .header("X-Api-Key", &key)
                    .json(&body)
                    .send()
                    .await?
                    .json()
                    .await?;
                ids.push(answer["task_id"].as_str().context("task_id")?.to_owned());
            }
            anyhow::Ok(ids)
        }));
    }
    let mut ids = Vec::new();
    for starter in starters {
        ids.extend(starter.await??);
    }
    let wanted = before + ids.len();
    while count().await? < wanted {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let took = started.elapsed();
    let later = projector_seconds(cluster).await?;
    let share = (
        metrics.audit_share(later),
        metrics.audit_share_at_most(later),
    );

    let head = loop {
        let (_, head) = cluster.get("/api/log/head", Some(&cluster.api_key)).await?;
        if head["head"]["tree_size"]
            .as_u64()
            .is_some_and(|n| n as usize >= logged + ids.len())
        {
            break head;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    let size = head["head"]["tree_size"].as_u64().context("tree_size")?;
    let timed = |paths: Vec<String>| async move {
        let mut took = Vec::new();
        for path in paths {
            let call = Instant::now();
            let (status, body) = cluster.get(&path, Some(&cluster.api_key)).await?;
            took.push(call.elapsed().as_secs_f64() * 1_000.0);
            anyhow::ensure!(status == 200, "{path}: {body}");
        }
        took.sort_by(f64::total_cmp);
        let at = |q: f64| took[((took.len() - 1) as f64 * q) as usize];
        anyhow::Ok((at(0.5), at(0.99)))
    };
    let step = ids.len() / 500;
    let inclusion = timed(
        ids.iter()
            .step_by(step.max(1))
            .map(|id| format!("/api/log/proof/inclusion?task_id={id}&tree_size={size}"))
            .collect(),
    )
    .await?;
    let consistency = timed(
        (1..=500u64)
            .map(|i| {
                format!(
                    "/api/log/proof/consistency?from={}&to={size}",
                    i * size / 501
                )
            })
            .collect(),
    )
    .await?;
    Ok(Receipts {
        took,
        rate: per_second(ids.len(), started),
        share,
        inclusion,
        consistency,
    })
}

/// The projector's time split, from its metrics (sums of seconds, and counts).
#[derive(Debug, Default, Clone, Copy)]
struct ProjectorTime {
    /// Receipts and heads, but for writing them: building, waiting for signatures, held-back heads.
    audit: f64,
    /// The statements that write receipts with the offsets, and how many.
    write: (f64, f64),
    /// The statements that write only the offsets, and how many.
    offsets: (f64, f64),
    /// Whole batches.
    batches: f64,
}

impl ProjectorTime {
    /// What receipts and heads cost between `self` and `later`: their own work, plus what
    /// their rows add to the offsets statement they ride in (its time beyond a plain
    /// offsets update); as a share of the batches' time.
    fn audit_share(self, later: Self) -> f64 {
        let writes = later.write.1 - self.write.1;
        let offsets =
            (later.offsets.0 - self.offsets.0) / (later.offsets.1 - self.offsets.1).max(1.0);
        let rows = (later.write.0 - self.write.0) - writes * offsets;
        (later.audit - self.audit + rows.max(0.0)) / (later.batches - self.batches)
    }

    /// The same, charging receipts the whole statement they ride in (an upper bound).
    fn audit_share_at_most(self, later: Self) -> f64 {
        let write = later.write.0 - self.write.0;
        (later.audit - self.audit + write) / (later.batches - self.batches)
    }
}

async fn projector_seconds(cluster: &Cluster) -> anyhow::Result<ProjectorTime> {
    let text = cluster
        .http
        .get(cluster.metrics_url("projector"))
        .send()
        .await?
        .text()
        .await?;
    // Sums a summary's series whose labels contain `labels`.
    let total = |name: &str, labels: &str| -> f64 {
        text.lines()
            .filter(|line| line.starts_with(name) && line.contains(labels))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let audit = |part: &str| {
        total(
            "axon_projector_audit_seconds_sum",
            &format!("part=\"{part}\""),
        )
    };
    Ok(ProjectorTime {
        audit: audit("stage") + audit("sign") + audit("heads"),
        write: (
            audit("write"),
            total("axon_projector_audit_seconds_count", "part=\"write\""),
        ),
        offsets: (
            total("axon_projector_offsets_seconds_sum", ""),
            total("axon_projector_offsets_seconds_count", ""),
        ),
        batches: total("axon_projector_batch_seconds_sum", ""),
    })
}

/// `sessions` MCP sessions each calling `stream_task` `calls` times in a row on an ended
/// task (so every call answers at once); calls per second in all, and the p50 and p99 of one
/// call's round trip.
async fn mcp_round_trips(
    cluster: &Cluster,
    sessions: usize,
    calls: usize,
) -> anyhow::Result<(f64, f64, f64)> {
    let task = cluster
        .start_task(
            json!({"name": "done", "adapter": "mock", "args": {"steps": 3, "interval_ms": 1}}),
        )
        .await?;
    collect_to_end_of(cluster, &task).await?;
    let url = format!("{}/mcp", cluster.base_url);
    let started = Instant::now();
    let mut callers = Vec::new();
    for _ in 0..sessions {
        let session = Session::open(&url, &cluster.api_key).await?;
        let task = task.clone();
        callers.push(tokio::spawn(async move {
            let mut took = Vec::with_capacity(calls);
            for _ in 0..calls {
                let call = Instant::now();
                let answer = session
                    .call_tool("stream_task", json!({"task_id": task, "wait_s": 0}))
                    .await?;
                took.push(call.elapsed().as_secs_f64() * 1_000.0);
                anyhow::ensure!(
                    answer["result"]["structuredContent"]["done"] == true,
                    "{answer}"
                );
            }
            anyhow::Ok(took)
        }));
    }
    let mut all = Vec::new();
    for caller in callers {
        all.extend(caller.await??);
    }
    let rate = per_second(sessions * calls, started);
    all.sort_by(f64::total_cmp);
    let at = |q: f64| all[((all.len() - 1) as f64 * q) as usize];
    Ok((rate, at(0.5), at(0.99)))
}

async fn collect_to_end_of(
    cluster: &Cluster,
    task: &str,
) -> anyhow::Result<Vec<serde_json::Value>> {
    e2e::collect_to_end(cluster.sse(task, "", None).await?).await
}

/// A mock task of `steps` progress events 1 ms apart, watched with `stream_task`; the
/// latency of each progress notification is its arrival minus the `ts` of the last event it
/// reports.
async fn emit_to_progress(cluster: &mut Cluster, steps: usize) -> anyhow::Result<(f64, f64, f64)> {
    cluster.kill("worker-1").await?;
    let task = cluster
        .start_task(json!({"name": "latency", "adapter": "mock", "args": {"steps": steps, "interval_ms": 1}}))
        .await?;
    let session = Session::open(&format!("{}/mcp", cluster.base_url), &cluster.api_key).await?;
    let watcher = {
        let task = task.clone();
        tokio::spawn(async move {
            let (mut id, mut since, mut arrivals) = (0, 0, Vec::new());
            loop {
                id += 1;
                let call = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {
                    "name": "stream_task", "_meta": {"progressToken": id},
                    "arguments": {"task_id": task, "since_seq": since, "wait_s": 30, "max_events": 1000}}});
                let mut messages = sse_messages(session.post(&call).await?);
                while let Some(message) = messages.next().await {
                    let Some(json) = message.json else { continue };
                    if json["method"] == "notifications/progress" {
                        let seq = json["params"]["_meta"]["io.axontask/last_seq"]
                            .as_u64()
                            .context("seq")?;
                        arrivals.push((seq, chrono::Utc::now()));
                    } else if json["id"] == id {
                        let batch = &json["result"]["structuredContent"];
                        since = batch["next_seq"].as_u64().context("next_seq")?;
                        if batch["done"] == true {
                            return anyhow::Ok(arrivals);
                        }
                        break;
                    }
                }
            }
        })
    };
    cluster.spawn_role("worker-1", "worker").await?;
    let arrivals = watcher.await??;
    let (_, page) = cluster
        .get(
            &format!("/mcp/tasks/{task}/events?limit=1000"),
            Some(&cluster.api_key),
        )
        .await?;
    let mut stamps = std::collections::HashMap::new();
    let mut after = 0;
    let mut page = page;
    loop {
        let events = page["events"].as_array().context("events")?.clone();
        if events.is_empty() {
            break;
        }
        for event in &events {
            let ts = chrono::DateTime::parse_from_rfc3339(event["ts"].as_str().context("ts")?)?;
            stamps.insert(
                event["seq"].as_u64().context("seq")?,
                ts.with_timezone(&chrono::Utc),
            );
        }
        after = page["next_seq"].as_u64().context("next_seq")?;
        page = cluster
            .get(
                &format!("/mcp/tasks/{task}/events?since_seq={after}&limit=1000"),
                Some(&cluster.api_key),
            )
            .await?
            .1;
    }
    anyhow::ensure!(after as usize >= steps, "the log holds every step");
    let mut all: Vec<f64> = arrivals
        .iter()
        .filter_map(|(seq, arrived)| {
            let micros = (*arrived - *stamps.get(seq)?).num_microseconds()?;
            Some(micros as f64 / 1_000.0)
        })
        .collect();
    anyhow::ensure!(!all.is_empty(), "no progress notification arrived");
    all.sort_by(f64::total_cmp);
    let at = |q: f64| all[((all.len() - 1) as f64 * q) as usize];
    Ok((at(0.5), at(0.99), at(1.0)))
}

/// Short mock tasks started by `wrk` (32 connections): tasks a second from the first start
/// to the last terminal event in Postgres, beside the starts the API accepted; then every
/// task's log is checked whole (each event once, `seq` 1 to the last, in its chain).
async fn short_rows(cluster: &Cluster, raw: &raw::Raw, seconds: u64) -> anyhow::Result<()> {
    let pool = cluster.pg().await?;
    for steps in [1, 3] {
        let tenant = format!("short-{steps}");
        let key = cluster.create_key(&tenant).await?;
        let body = json!({"name": "short", "adapter": "mock", "queue_if_busy": true, "args": {"steps": steps, "interval_ms": 0}});
        let before = cpu::read(cluster);
        let wrk = load::run(&load::Load {
            url: format!("{}/mcp/start_task", cluster.base_url),
            key: &key,
            body: Some(&body),
            connections: 32,
            duration: std::time::Duration::from_secs(seconds),
            pause: None,
        })
        .await?;
        // Every accepted start ends (wrk counts only the answers it read in time, so there
        // may be a few more); the rate is from the first start to the last end.
        let answered = i64::try_from(wrk.requests)?;
        let deadline = Instant::now() + std::time::Duration::from_secs(300);
        let (tasks, elapsed) = loop {
            let (tasks, ended, took): (i64, i64, Option<f64>) = sqlx::query_as(
                "SELECT count(*), count(*) FILTER (WHERE t.state = 'succeeded'),
                        EXTRACT(EPOCH FROM max(t.ended_at) - min(t.created_at))::float8
                 FROM tasks t JOIN tenants n ON n.tenant_id = t.tenant_id WHERE n.name = $1",
            )
            .bind(&tenant)
            .fetch_one(&pool)
            .await?;
            if tasks >= answered && ended == tasks {
                break (tasks, took.unwrap_or(f64::NAN));
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "{ended} of {tasks} tasks ended ({answered} starts answered)"
            );
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        };
        let (broken,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM tasks t JOIN tenants n ON n.tenant_id = t.tenant_id
             WHERE n.name = $1 AND (t.last_seq <> $2 OR (SELECT count(*) FROM task_events e
                 WHERE e.task_id = t.task_id AND e.seq BETWEEN 1 AND $2) <> $2)",
        )
        .bind(&tenant)
        .bind(i64::from(steps) + 3)
        .fetch_one(&pool)
        .await?;
        anyhow::ensure!(broken == 0, "{broken} tasks' logs are not whole");
        println!(
            "{:<58} {:>10.0} tasks/s (API accepted {:.0}/s, {:.2} × raw axum)",
            format!("{steps}-step mock tasks, wrk 32 conns × {seconds} s, start → end"),
            tasks as f64 / elapsed,
            wrk.per_second,
            wrk.per_second / raw.http.per_second
        );
        cpu::print_split(&cpu::read(cluster), &before);
    }
    Ok(())
}

/// `start_task` and `/healthz` latency from one `wrk` connection pausing 2 ms between
/// requests (a steady ~400 a second), beside the raw axum handler's.
async fn latency_rows(cluster: &Cluster, raw: &raw::Raw, seconds: u64) -> anyhow::Result<()> {
    let body =
        json!({"name": "latency", "adapter": "mock", "args": {"steps": 1, "interval_ms": 0}});
    for (what, path, body) in [
        ("start_task", "/mcp/start_task", Some(&body)),
        ("GET /healthz (the same server, no work)", "/healthz", None),
    ] {
        let wrk = load::run(&load::Load {
            url: format!("{}{path}", cluster.base_url),
            key: &cluster.api_key,
            body,
            connections: 1,
            duration: std::time::Duration::from_secs(seconds),
            pause: Some(std::time::Duration::from_millis(2)),
        })
        .await?;
        println!(
            "{:<58} p50 {:.2} ms, p99 {:.2} ms ({:.0}/s; p50 {:.1} × raw axum)",
            format!("{what}, one wrk connection"),
            ms(wrk.p50),
            ms(wrk.p99),
            wrk.per_second,
            ms(wrk.p50) / ms(raw.http_one.p50)
        );
    }
    Ok(())
}

/// `start_task` latency with rate limits and quotas (the cluster's API) beside a second API
/// process on the same services without them, requests alternating between the two at a
/// steady 500 a second from one client.
async fn limits_rows(cluster: &mut Cluster, scale: Scale) -> anyhow::Result<()> {
    let starts = scale.pick(4_000, 1_000);
    cluster.set_env("LIMITS_ENABLED", "false");
    cluster
        .spawn_role("api-unlimited", "command-api,query-api")
        .await?;
    cluster.set_env("LIMITS_ENABLED", "true");
    let bases = [cluster.base_url.clone(), cluster.url("api-unlimited")];
    let body =
        json!({"name": "latency", "adapter": "mock", "args": {"steps": 1, "interval_ms": 0}});
    let mut took = [Vec::new(), Vec::new()];
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(2));
    for n in 0..starts {
        tick.tick().await;
        let started = Instant::now();
        let answer = cluster
            .http
            .post(format!("{}/mcp/start_task", bases[n % 2]))
            .header("X-Api-Key", &cluster.api_key)
            .json(&body)
            .send()
            .await?;
        anyhow::ensure!(
            answer.status() == 200,
            "start_task answered {}",
            answer.status()
        );
        took[n % 2].push(started.elapsed().as_secs_f64() * 1000.0);
    }
    for (what, mut times) in ["on", "off"].into_iter().zip(took) {
        times.sort_by(f64::total_cmp);
        let at = |q: f64| times[((times.len() - 1) as f64 * q) as usize];
        println!(
            "{:<58} p50 {:.2} ms, p99 {:.2} ms",
            format!("start_task at 500/s, rate limits and quotas {what}"),
            at(0.5),
            at(0.99)
        );
    }
    Ok(())
}

/// The raw rates an event row is read against.
#[derive(Clone, Copy)]
struct Versus {
    /// Raw JetStream publish, messages a second.
    publish: f64,
    /// The raw event pipeline ([`floor`]), events a second.
    floor: f64,
}

fn row(what: &str, rate: f64, unit: &str, versus: Option<Versus>) {
    match versus {
        Some(raw) => println!(
            "{what:<58} {rate:>10.0} {unit} ({:.2} × raw JetStream publish, {:.2} × raw event pipeline)",
            rate / raw.publish,
            rate / raw.floor
        ),
        None => println!("{what:<58} {rate:>10.0} {unit}"),
    }
}

fn per_second(count: usize, started: Instant) -> f64 {
    count as f64 / started.elapsed().as_secs_f64()
}

/// `tasks` shell tasks printing `lines` lines each, one SSE client each; events/s from the
/// first start to the last terminal event received.
async fn chatty_tasks(cluster: &Cluster, tasks: usize, lines: usize) -> anyhow::Result<f64> {
    let args = json!({"command": format!("seq 1 {lines}")});
    chatty(cluster, "shell", &args, tasks, lines).await
}

/// `tasks` tasks of `adapter` with `args` printing `lines` lines each, one SSE client each;
/// events/s from the first start to the last terminal event received.
async fn chatty(
    cluster: &Cluster,
    adapter: &str,
    args: &serde_json::Value,
    tasks: usize,
    lines: usize,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut readers = Vec::new();
    for _ in 0..tasks {
        let task = cluster
            .start_task(json!({"name": "bench", "adapter": adapter, "args": args}))
            .await?;
        let stream = cluster.sse(&task, "", None).await?;
        readers.push(tokio::spawn(async move {
            let events = e2e::collect_to_end(stream).await?;
            e2e::assert_chain(&events);
            anyhow::Ok(events.len())
        }));
    }
    let mut counts = Vec::new();
    for reader in readers {
        counts.push(reader.await??);
    }
    let events = counts.iter().sum();
    anyhow::ensure!(
        counts.iter().all(|&n| n == lines + 3),
        "every line is one event: {counts:?} events for {lines} lines each"
    );
    Ok(per_second(events, started))
}

/// `tasks` mock tasks of `steps` steps each, started at once on the one worker (more than
/// its in-flight ack budget), each followed by an SSE client; how long from the first start
/// to the last terminal event received, and events/s. Every chain must be whole.
async fn many_mock_tasks(
    cluster: &Cluster,
    tasks: usize,
    steps: usize,
) -> anyhow::Result<(std::time::Duration, f64)> {
    let started = Instant::now();
    let mut readers = Vec::new();
    for _ in 0..tasks {
        let task = cluster
            .start_task(json!({"name": "many", "adapter": "mock", "args": {"steps": steps, "interval_ms": 0}}))
            .await?;
        let stream = cluster.sse(&task, "", None).await?;
        readers.push(tokio::spawn(async move {
            let events = e2e::collect_to_end(stream).await?;
            e2e::assert_chain(&events);
            anyhow::ensure!(
                events.len() == steps + 3,
                "{} events for {steps} steps",
                events.len()
            );
            anyhow::Ok(events.len())
        }));
    }
    let mut events = 0;
    for reader in readers {
        events += reader.await??;
    }
    Ok((started.elapsed(), per_second(events, started)))
}
