//! Driving the MCP endpoint with outside clients: the official conformance suite (Node)
//! and the official Python SDK, installed by `scripts/mcp-tools.sh` (which
//! `scripts/test.sh` runs first).

use std::path::PathBuf;
use std::process::Stdio;

use anyhow::{Context, bail};
use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use tokio::process::Command;

use crate::cluster::workspace;

fn tool(env_var: &str, default: &str) -> anyhow::Result<PathBuf> {
    let path = std::env::var_os(env_var)
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join(".data/mcp-tools").join(default));
    if !path.exists() {
        bail!(
            "{} not found; run scripts/mcp-tools.sh (scripts/test.sh runs it)",
            path.display()
        );
    }
    Ok(path)
}

/// Serves on a free loopback port and forwards every request to `upstream` with
/// `X-Api-Key: key` added (for clients that cannot send headers, like the conformance
/// suite); returns the proxy's base URL. `Host` and `Origin` pass through unchanged.
pub async fn key_proxy(upstream: String, key: String) -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let client = reqwest::Client::new();
    let app = axum::Router::new().fallback(move |request: Request| {
        let (client, upstream, key) = (client.clone(), upstream.clone(), key.clone());
        async move {
            let (parts, body) = request.into_parts();
            let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
            let mut forward = client.request(parts.method, format!("{upstream}{path}"));
            for (name, value) in &parts.headers {
                if name != "content-length" && name != "connection" {
                    forward = forward.header(name, value);
                }
            }
            let forward = forward
                .header("X-Api-Key", key)
                .body(reqwest::Body::wrap_stream(body.into_data_stream()));
            match forward.send().await {
                Ok(answer) => {
                    let mut response = Response::builder().status(answer.status());
                    for (name, value) in answer.headers() {
                        response = response.header(name, value);
                    }
                    response
                        .body(Body::from_stream(answer.bytes_stream()))
                        .expect("a valid response")
                }
                Err(e) => Response::builder()
                    .status(502)
                    .body(Body::from(e.to_string()))
                    .expect("a valid response"),
            }
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(format!("http://{address}"))
}

/// One conformance scenario's outcome.
#[derive(Debug)]
pub struct Scenario {
    /// The scenario.
    pub name: String,
    /// Whether every check passed.
    pub passed: bool,
    /// The suite's output, for failure messages.
    pub output: String,
}

/// Runs conformance `scenario` against the MCP endpoint at `url`; `next` picks the
/// 0.2.0 line (tasks scenarios) instead of 0.1.16.
pub async fn conformance(url: &str, scenario: &str, next: bool) -> anyhow::Result<Scenario> {
    let node = tool("AXON_NODE", "conformance/node_modules/node/bin/node")?;
    let suite = if next {
        tool(
            "AXON_CONFORMANCE_NEXT",
            "conformance-next/node_modules/@modelcontextprotocol/conformance/dist/index.js",
        )?
    } else {
        tool(
            "AXON_CONFORMANCE",
            "conformance/node_modules/@modelcontextprotocol/conformance/dist/index.js",
        )?
    };
    let output = Command::new(node)
        .arg(suite)
        .args(["server", "--url", url, "--scenario", scenario])
        .stdin(Stdio::null())
        .output()
        .await
        .context("running the conformance suite")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(Scenario {
        name: scenario.to_owned(),
        passed: output.status.success(),
        output: text,
    })
}

/// Runs `tests/mcp/NAME.py` with the Python SDK on its path, `args` as arguments; returns
/// its standard output, or fails with everything it printed.
pub async fn python(name: &str, args: &[&str]) -> anyhow::Result<String> {
    let sdk = tool("AXON_MCP_PYTHONPATH", "py")?;
    let script = workspace().join("tests/mcp").join(format!("{name}.py"));
    let output = Command::new("python3")
        .arg(&script)
        .args(args)
        .env("PYTHONPATH", sdk)
        .stdin(Stdio::null())
        .output()
        .await
        .context("running python3")?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        bail!(
            "{} failed ({}):\n{stdout}\n{}",
            script.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(stdout)
}
