//! Fair sharing of workers: one tenant's backlog does not hold up another tenant, and a
//! tenant's priorities order its own waiting tasks.

use std::time::Duration;

use anyhow::Context as _;
use e2e::{Cluster, Options, collect_to_end, open_sse, until_kind};
use futures::{StreamExt, TryStreamExt};
use serde_json::{Value, json};
use shared::ids::{TaskId, TenantId};
use tokio::time::Instant;

/// Tenant A's backlog.
const BACKLOG: usize = 2_000;

/// The tenant of a task the projector has recorded.
async fn tenant_of(pool: &sqlx::PgPool, task: &str) -> anyhow::Result<TenantId> {
    let task: TaskId = task.parse()?;
    let deadline = Instant::now() + e2e::PATIENCE;
    while Instant::now() < deadline {
        let tenant: Option<uuid::Uuid> =
            sqlx::query_scalar("SELECT tenant_id FROM tasks WHERE task_id = $1")
                .bind(task.0)
                .fetch_optional(pool)
                .await?;
        if let Some(tenant) = tenant {
            return Ok(TenantId(tenant));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    anyhow::bail!("task {task} was not recorded within {:?}", e2e::PATIENCE)
}

#[tokio::test]
async fn a_tenants_backlog_does_not_delay_another_tenant() -> anyhow::Result<()> {
    let cluster = Cluster::start(Options {
        env: vec![("WORKER_CONCURRENCY", "4")],
        ..Options::default()
    })
    .await?;
    // Each of A's tasks holds a slot for a second: the backlog is minutes of work.
    let slow = json!({"name": "a", "adapter": "mock", "args": {"steps": 2, "interval_ms": 500}});
    let first = cluster.start_task(slow.clone()).await?;
    futures::stream::iter(1..BACKLOG)
        .map(|_| cluster.start_task(slow.clone()))
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await?;

    let beta = cluster.create_key("beta").await?;
    let asked = Instant::now();
    let (status, started) = cluster
        .post(
            "/mcp/start_task",
            Some(&beta),
            &json!({"name": "b", "adapter": "mock", "args": {"steps": 1}}),
        )
        .await?;
    assert_eq!(status, 200, "{started}");
    let task = started["task_id"].as_str().context("task_id")?;
    let request = cluster
        .http
        .get(format!("{}/mcp/tasks/{task}/stream", cluster.base_url))
        .header("X-Api-Key", &beta);
    let (_, rest) = until_kind(open_sse(request).await?, "started").await?;
    let waited = asked.elapsed();
    assert!(
        waited < Duration::from_secs(3),
        "tenant B's task waited {waited:?} behind tenant A's backlog"
    );
    let end = collect_to_end(rest).await?;
    assert_eq!(
        end.last().map(|e| e["kind"].clone()),
        Some(json!("succeeded"))
    );

    // A's backlog was still there: without turns, B would have waited for all of it.
    let alpha = tenant_of(&cluster.pg().await?, &first).await?;
    let axon = cluster.js().await?.get_stream("AXON").await?;
    let waiting = axon
        .consumer_info(shared::queue::consumer_name(alpha))
        .await?
        .num_pending;
    assert!(
        waiting > 1_000,
        "only {waiting} of A's tasks were still waiting"
    );

    // Commands workers took and held while their slots were busy were never given to a
    // second worker: no task of A started twice (the ack wait here is 2 s).
    let pool = cluster.pg().await?;
    let ended = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM tasks WHERE tenant_id = $1 AND state = 'succeeded'",
        )
        .bind(alpha.0)
        .fetch_one(&pool)
        .await
        .unwrap_or(0)
    };
    e2e::eventually(|| async { ended().await >= 12 }).await?;
    let twice: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT task_id FROM task_events
          WHERE tenant_id = $1 AND kind = 'started' GROUP BY task_id HAVING count(*) > 1) t",
    )
    .bind(alpha.0)
    .fetch_one(&pool)
    .await?;
    assert_eq!(twice, 0, "tasks of A started more than once");
    Ok(())
}

#[tokio::test]
async fn priority_orders_a_tenants_waiting_tasks_and_equals_keep_their_order() -> anyhow::Result<()>
{
    let cluster = Cluster::start(Options {
        env: vec![("WORKER_CONCURRENCY", "1")],
        ..Options::default()
    })
    .await?;
    let blocker = cluster
        .start_task(json!({"name": "blocker", "adapter": "mock", "args": {"steps": 1, "interval_ms": 2000}}))
        .await?;
    let (_, blocking) = until_kind(cluster.sse(&blocker, "", None).await?, "started").await?;
    let mut queued = Vec::new();
    for (name, priority) in [
        ("low-1", json!(0)),
        ("low-2", json!(0)),
        ("default", Value::Null),
        ("low-3", json!(0)),
        ("high", json!(9)),
    ] {
        let mut body = json!({"name": name, "adapter": "mock", "args": {"steps": 1}});
        if !priority.is_null() {
            body["priority"] = priority;
        }
        queued.push((name, cluster.start_task(body).await?));
    }
    collect_to_end(blocking).await?;
    let pool = cluster.pg().await?;
    let axon = cluster.js().await?.get_stream("AXON").await?;
    let mut order = Vec::new();
    for (name, task) in &queued {
        cluster.stream_to_end(task).await?;
        let tenant = tenant_of(&pool, task).await?;
        let subject =
            shared::names::event_subject(tenant, task.parse()?, shared::events::EventKind::Started);
        let started = axon.get_last_raw_message_by_subject(&subject).await?;
        order.push((started.sequence, *name));
    }
    order.sort();
    let names: Vec<_> = order.into_iter().map(|(_, name)| name).collect();
    assert_eq!(names, ["high", "default", "low-1", "low-2", "low-3"]);
    Ok(())
}
