//! The official MCP conformance suite against `axontask serve`, with the fixture tools
//! and resources turned on (`MCP_CONFORMANCE_FIXTURES`). The suite cannot send an API
//! key, so a loopback proxy adds one; `Host` and `Origin` pass through untouched.

use e2e::mcp::{conformance, key_proxy};
use e2e::{Cluster, Options};
use futures::StreamExt;

/// Every 0.1.16 scenario that applies to a server with tools and resources (prompts,
/// completion, logging levels and elicitation are features this server does not have).
const SCENARIOS: [&str; 21] = [
    "server-initialize",
    "ping",
    "tools-list",
    "tools-call-simple-text",
    "tools-call-image",
    "tools-call-audio",
    "tools-call-embedded-resource",
    "tools-call-mixed-content",
    "tools-call-with-logging",
    "tools-call-error",
    "tools-call-with-progress",
    "tools-call-sampling",
    "resources-list",
    "resources-read-text",
    "resources-read-binary",
    "resources-templates-read",
    "resources-subscribe",
    "resources-unsubscribe",
    "server-sse-multiple-streams",
    "server-sse-polling",
    "dns-rebinding-protection",
];

/// The tasks-extension scenarios of the 0.2.0 line.
const TASK_SCENARIOS: [&str; 10] = [
    "tasks-lifecycle",
    "tasks-capability-negotiation",
    "tasks-wire-fields",
    "tasks-request-state-removal",
    "tasks-mrtr-input",
    "tasks-request-headers",
    "tasks-dispatch-and-envelope",
    "tasks-status-notifications",
    "tasks-required-task-error",
    "tasks-mrtr-composition",
];

/// Runs `scenarios` (of the 0.2.0 line when `next`) against a cluster serving the fixtures,
/// four at a time; fails with the output of every scenario that did not pass cleanly.
async fn run(scenarios: &[&str], next: bool) -> anyhow::Result<()> {
    let cluster = Cluster::start(Options {
        mcp_fixtures: true,
        ..Options::default()
    })
    .await?;
    let proxy = key_proxy(cluster.base_url.clone(), cluster.api_key.clone()).await?;
    let url = format!("{proxy}/mcp");
    let results: Vec<_> = futures::stream::iter(scenarios)
        .map(|scenario| conformance(&url, scenario, next))
        .buffer_unordered(4)
        .collect()
        .await;
    let mut failures = Vec::new();
    for result in results {
        let result = result?;
        if !result.passed {
            failures.push(format!("== {} ==\n{}", result.name, result.output));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    Ok(())
}

#[tokio::test]
async fn the_conformance_suite_passes() -> anyhow::Result<()> {
    run(&SCENARIOS, false).await
}

#[tokio::test]
async fn the_tasks_extension_scenarios_pass() -> anyhow::Result<()> {
    run(&TASK_SCENARIOS, true).await
}
