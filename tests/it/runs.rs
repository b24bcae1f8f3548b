//! One run at a time: a start is stored once whatever the retries, and a run whose command
//! went to another worker stops and leaves the log to the newer run.

use std::time::Duration;

use e2e::{Cluster, Options, alive, assert_chain, attempts, eventually, kinds, parent};
use futures::{StreamExt, TryStreamExt};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};

#[tokio::test]
async fn a_retry_after_the_dedup_window_while_the_projector_lags_is_one_start() -> anyhow::Result<()>
{
    let mut cluster = Cluster::start(Options {
        workers: 0,
        ..Options::default()
    })
    .await?;
    // The projector lags (it is down), so Postgres does not know the task yet.
    cluster.kill("projector").await?;
    let js = cluster.js().await?;
    let mut axon = js.get_stream("AXON").await?;
    let mut config = axon.info().await?.config.clone();
    config.duplicate_window = Duration::from_secs(1);
    js.update_stream(&config).await?;

    let body = json!({"name": "once", "adapter": "mock", "args": {"steps": 1, "interval_ms": 1},
        "idempotency_key": "late-retry"});
    let task = cluster.start_task(body.clone()).await?;
    // Time passes beyond the dedup window: JetStream no longer knows the message id.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(cluster.start_task(body).await?, task, "the same task id");

    let starts: Vec<(String, usize)> = axon
        .info_with_subjects(format!("axon.cmd.*.{task}.start"))
        .await?
        .try_collect()
        .await?;
    assert_eq!(starts.len(), 1, "{starts:?}");
    assert_eq!(starts[0].1, 1, "one start command is stored: {starts:?}");

    cluster.spawn_role("projector", "projector").await?;
    cluster.spawn_role("worker-1", "worker").await?;
    let events = cluster.stream_to_end(&task).await?;
    assert_eq!(
        kinds(&events),
        ["requested", "started", "progress", "succeeded"]
    );
    assert_eq!(events[1]["payload"]["attempt"], 1);
    Ok(())
}

#[tokio::test]
async fn a_run_whose_command_went_to_another_worker_stops_and_the_log_follows_the_new_run()
-> anyhow::Result<()> {
    let cluster = Cluster::start(Options {
        workers: 2,
        ..Options::default()
    })
    .await?;
    let task = cluster
        .start_task(json!({"name": "twice", "adapter": "shell", "args": {"command": "echo $$; exec sleep 600"}}))
        .await?;
    let mut stream = cluster.sse(&task, "", None).await?;
    let mut seen = Vec::new();
    let mut pids = Vec::new();
    let mut stopped = None;
    while pids.len() < 2 {
        let event: Value = tokio::time::timeout(e2e::PATIENCE * 4, stream.next())
            .await?
            .expect("an event");
        if event["kind"] == "stdout" {
            let pid: i32 = event["payload"]["line"].as_str().unwrap_or("0").parse()?;
            pids.push(pid);
            if stopped.is_none() {
                // NATS stops hearing from the worker that runs it (frozen longer than the
                // ack wait of 2 s), so the command goes to the other worker.
                let worker = parent(pid)?;
                kill(Pid::from_raw(worker), Signal::SIGSTOP)?;
                stopped = Some(worker);
            }
        }
        seen.push(event);
    }
    let worker = stopped.expect("a frozen worker");
    kill(Pid::from_raw(worker), Signal::SIGCONT)?;
    let [old, new] = pids[..] else { unreachable!() };
    assert_ne!(old, new);
    // The old run learns it was replaced and stops its process; the new one runs on.
    eventually(|| async { !alive(old) }).await?;
    assert!(alive(new), "the new run's process runs");

    assert_eq!(cluster.cancel(&task).await?.0, 200);
    seen.extend(e2e::collect_to_end(stream).await?);
    eventually(|| async { !alive(new) }).await?;
    assert_eq!(
        kinds(&seen),
        [
            "requested",
            "started",
            "stdout",
            "started",
            "stdout",
            "cancel_requested",
            "canceled"
        ]
    );
    assert_eq!(attempts(&seen), [1, 2]);
    assert_chain(&seen);
    Ok(())
}

/// A tenant's consumer made anew (here: deleted, and made again by the worker from the
/// stream's start) delivers commands acked long ago as first deliveries. The worker's guess
/// that a first delivery had no earlier run is refused at the claim, it decides again from
/// what is stored, and the task that ended does not run again.
#[tokio::test]
async fn a_start_delivered_again_as_new_does_not_run_an_ended_task_again() -> anyhow::Result<()> {
    let cluster = Cluster::start(Options::default()).await?;
    let body = json!({"name": "once", "adapter": "mock", "args": {"steps": 2, "interval_ms": 1}});
    let task = cluster.start_task(body.clone()).await?;
    let before = e2e::collect_to_end(cluster.sse(&task, "", None).await?).await?;
    let tenant: uuid::Uuid = sqlx::query_scalar("SELECT tenant_id FROM tasks WHERE task_id = $1")
        .bind(task.parse::<uuid::Uuid>()?)
        .fetch_one(&cluster.pg().await?)
        .await?;
    let consumer = shared::queue::consumer_name(shared::ids::TenantId(tenant));
    let axon = cluster.js().await?.get_stream("AXON").await?;
    axon.delete_consumer(&consumer).await?;

    // The next start makes the worker hear of the tenant and make its consumer again.
    let next = cluster.start_task(body).await?;
    e2e::collect_to_end(cluster.sse(&next, "", None).await?).await?;
    eventually(|| async {
        axon.consumer_info(&consumer)
            .await
            .is_ok_and(|info| info.num_pending == 0 && info.num_ack_pending == 0)
    })
    .await?;
    for kind in ["started", "succeeded"] {
        let subject = format!("axon.evt.{tenant}.{task}.{kind}");
        let stream = cluster.js().await?.get_stream("AXON").await?;
        let info = stream
            .info_with_subjects(&subject)
            .await?
            .try_collect::<Vec<_>>()
            .await?;
        let stored = info
            .iter()
            .find(|(s, _)| *s == subject)
            .map_or(0, |(_, n)| *n);
        assert_eq!(stored, 1, "{kind} events of the ended task in AXON");
    }
    let after = e2e::collect_to_end(cluster.sse(&task, "", None).await?).await?;
    assert_eq!(after, before, "the ended task's log changed");
    Ok(())
}
