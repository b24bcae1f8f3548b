//! Load a real user brings: more concurrent chatty tasks on one worker than its publish-ack
//! budget holds, each streamed to its end.

use e2e::{Cluster, Options, assert_chain, collect_to_end};
use serde_json::json;

/// Tasks at once: more than the worker's 32 slots, so every slot stays busy.
const TASKS: usize = 40;
/// Events per task beyond requested, started and the terminal one.
const STEPS: usize = 500;

#[tokio::test]
async fn more_chatty_tasks_than_the_ack_budget_all_finish() -> anyhow::Result<()> {
    let cluster = Cluster::start(Options::default()).await?;
    let mut streams = Vec::new();
    for n in 0..TASKS {
        let task = cluster
            .start_task(json!({"name": format!("chatty-{n}"), "adapter": "mock",
                "args": {"steps": STEPS, "interval_ms": 0}}))
            .await?;
        streams.push(cluster.sse(&task, "", None).await?);
    }
    let readers: Vec<_> = streams
        .into_iter()
        .map(|stream| tokio::spawn(collect_to_end(stream)))
        .collect();
    for reader in readers {
        let events = reader.await??;
        assert_eq!(
            events.len(),
            STEPS + 3,
            "requested, started, every step, succeeded"
        );
        assert_chain(&events);
    }
    Ok(())
}
