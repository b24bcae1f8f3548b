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

/// A test tool installed by scripts/mcp-tools.sh: the path in `env_var`, or `default`
/// under `.data/mcp-tools/`.
pub fn tool(env_var: &str, default: &str) -> anyhow::Result<PathBuf> {
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
    let client = crate::http_client();
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
    /// Whether every check passed, without a warning.
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
    let clean = text
        .lines()
        .any(|line| line.starts_with("Passed:") && line.ends_with(" 0 failed, 0 warnings"));
    Ok(Scenario {
        name: scenario.to_owned(),
        passed: output.status.success() && clean,
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

/// The protocol revision of sessions.
pub const SESSION_REVISION: &str = "2025-11-25";

/// One SSE message of an MCP stream: its event id and JSON-RPC message (`None` for a
/// priming event).
#[derive(Debug, Clone)]
pub struct Message {
    /// The SSE `id`.
    pub id: String,
    /// The JSON-RPC message.
    pub json: Option<serde_json::Value>,
}

/// A 2025-11-25 session spoken over plain HTTP, for tests that need to cut streams.
pub struct Session {
    http: reqwest::Client,
    url: String,
    key: String,
    /// The `Mcp-Session-Id`.
    pub id: String,
}

impl Session {
    /// Opens a session at `url` (`…/mcp`) with `initialize` and `notifications/initialized`.
    pub async fn open(url: &str, key: &str) -> anyhow::Result<Self> {
        let http = crate::http_client();
        let init = serde_json::json!({"jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {"protocolVersion": SESSION_REVISION, "capabilities": {},
                       "clientInfo": {"name": "e2e", "version": "1"}}});
        let response = http
            .post(url)
            .header("X-Api-Key", key)
            .header("Accept", "application/json, text/event-stream")
            .json(&init)
            .send()
            .await?;
        let id = response
            .headers()
            .get("mcp-session-id")
            .context("initialize answered no Mcp-Session-Id")?
            .to_str()?
            .to_owned();
        let mut messages = sse_messages(response);
        futures::StreamExt::next(&mut messages).await;
        let session = Self {
            http,
            url: url.to_owned(),
            key: key.to_owned(),
            id,
        };
        let initialized =
            serde_json::json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        let status = session.post(&initialized).await?.status();
        if !status.is_success() {
            bail!("notifications/initialized answered {status}");
        }
        Ok(session)
    }

    /// POSTs one JSON-RPC message in this session.
    pub async fn post(&self, body: &serde_json::Value) -> anyhow::Result<reqwest::Response> {
        Ok(self
            .http
            .post(&self.url)
            .header("X-Api-Key", &self.key)
            .header("Mcp-Session-Id", &self.id)
            .header("Mcp-Protocol-Version", SESSION_REVISION)
            .header("Accept", "application/json, text/event-stream")
            .json(body)
            .send()
            .await?)
    }

    /// Sends a request and returns the JSON-RPC message that answers it.
    pub async fn call(&self, body: &serde_json::Value) -> anyhow::Result<serde_json::Value> {
        use futures::StreamExt;
        let response = self.post(body).await?;
        let status = response.status();
        if !status.is_success() {
            bail!(
                "{} answered {status}: {}",
                body["method"],
                response.text().await?
            );
        }
        let mut messages = sse_messages(response);
        while let Some(message) = messages.next().await {
            if let Some(json) = message.json
                && json["id"] == body["id"]
            {
                return Ok(json);
            }
        }
        bail!("the stream ended without an answer to {body}")
    }

    /// Calls tool `name` and returns the JSON-RPC answer.
    pub async fn call_tool(
        &self,
        name: &str,
        arguments: serde_json::Value,
    ) -> anyhow::Result<serde_json::Value> {
        let body = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": name, "arguments": arguments}});
        self.call(&body).await
    }

    /// Opens the session's GET stream (server notifications not tied to a request).
    pub async fn listen(&self) -> anyhow::Result<reqwest::Response> {
        Ok(self
            .http
            .get(&self.url)
            .header("X-Api-Key", &self.key)
            .header("Mcp-Session-Id", &self.id)
            .header("Mcp-Protocol-Version", SESSION_REVISION)
            .header("Accept", "text/event-stream")
            .send()
            .await?)
    }

    /// Resumes a stream with `Last-Event-ID` at `url` (maybe another process).
    pub async fn resume(
        &self,
        url: &str,
        last_event_id: &str,
    ) -> anyhow::Result<reqwest::Response> {
        Ok(self
            .http
            .get(url)
            .header("X-Api-Key", &self.key)
            .header("Mcp-Session-Id", &self.id)
            .header("Mcp-Protocol-Version", SESSION_REVISION)
            .header("Accept", "text/event-stream")
            .header("Last-Event-ID", last_event_id)
            .send()
            .await?)
    }
}

/// The SSE messages of a response, in order.
pub fn sse_messages(
    response: reqwest::Response,
) -> impl futures::Stream<Item = Message> + Unpin + Send + use<> {
    use eventsource_stream::Eventsource;
    use futures::StreamExt;
    Box::pin(
        response
            .bytes_stream()
            .eventsource()
            .filter_map(|event| async move {
                let event = event.ok()?;
                let json = serde_json::from_str(&event.data).ok();
                Some(Message { id: event.id, json })
            }),
    )
}
