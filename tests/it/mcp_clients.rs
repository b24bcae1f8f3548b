//! The MCP endpoint driven by the official Python SDK (`tests/mcp/client.py`), in its
//! legacy (initialize, 2025-11-25 sessions) and auto (2026-07-28, stateless, tasks
//! extension) modes.

use e2e::mcp::python;
use e2e::{Cluster, Options};

async fn python_client(mode: &str) -> anyhow::Result<()> {
    let cluster = Cluster::start(Options::default()).await?;
    let url = format!("{}/mcp", cluster.base_url);
    let printed = python("client", &[&url, &cluster.api_key, &cluster.base_url, mode]).await?;
    assert!(!printed.contains("FAIL"), "{printed}");
    assert!(printed.contains("ok   ["), "{printed}");
    Ok(())
}

#[tokio::test]
async fn the_python_sdk_drives_tasks_in_legacy_mode() -> anyhow::Result<()> {
    python_client("legacy").await
}

#[tokio::test]
async fn the_python_sdk_drives_tasks_in_auto_mode_with_the_tasks_extension() -> anyhow::Result<()> {
    python_client("auto").await
}
