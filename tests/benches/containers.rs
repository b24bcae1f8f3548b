//! The docker adapter beside `shell` in the same run: how long from a start to the task's
//! first output line (a container is made, started and attached to first), and the events
//! a second of one task printing many lines.

use std::time::{Duration, Instant};

use e2e::Cluster;
use futures::StreamExt;
use serde_json::{Value, json};

use crate::{Scale, Versus, chatty, ms, row};

/// Prints the container rows beside the shell ones.
pub async fn rows(cluster: &Cluster, versus: Versus, scale: Scale) -> anyhow::Result<()> {
    let image = e2e::docker::busybox_image().await?;
    let runs = scale.pick(20, 5);
    let docker = json!({"image": image, "command": ["echo", "first"]});
    let shell = json!({"command": ["echo", "first"]});
    for (adapter, args) in [("docker", &docker), ("shell", &shell)] {
        let mut took = Vec::with_capacity(runs);
        for _ in 0..runs {
            took.push(first_line(cluster, adapter, args).await?);
        }
        took.sort();
        println!(
            "{:<58} p50 {:.1} ms, p99 {:.1} ms",
            format!("{adapter} task, start → first output line ({runs} in turn)"),
            ms(took[took.len() / 2]),
            ms(took[(took.len() * 99 / 100).min(took.len() - 1)])
        );
    }
    let lines = scale.pick(100_000, 20_000);
    let chatty_container = json!({"image": image, "command": format!("seq 1 {lines}")});
    let rate = chatty(cluster, "docker", &chatty_container, 1, lines).await?;
    let what = format!("1 docker task × {lines} lines, start → last SSE event");
    row(&what, rate, "events/s", Some(versus));
    let chatty_shell = json!({"command": format!("seq 1 {lines}")});
    let rate = chatty(cluster, "shell", &chatty_shell, 1, lines).await?;
    let what = format!("1 shell task × {lines} lines, the same run");
    row(&what, rate, "events/s", Some(versus));
    Ok(())
}

/// From the start request to the first `stdout` event on the task's stream.
async fn first_line(cluster: &Cluster, adapter: &str, args: &Value) -> anyhow::Result<Duration> {
    let asked = Instant::now();
    let task = cluster
        .start_task(json!({"name": "first", "adapter": adapter, "args": args}))
        .await?;
    let mut stream = cluster.sse(&task, "", None).await?;
    while let Some(event) = stream.next().await {
        if event["kind"] == "stdout" {
            let took = asked.elapsed();
            // To its end, so the next run starts on an idle worker.
            e2e::collect_to_end(stream).await?;
            return Ok(took);
        }
        anyhow::ensure!(
            !e2e::is_terminal(&event),
            "{adapter} task ended without output: {event}"
        );
    }
    anyhow::bail!("the {adapter} task's stream ended before its first line")
}
