//! Talking to a cluster like an agent does: HTTP calls and SSE streams.

use anyhow::{Context, bail};
use eventsource_stream::{Event, Eventsource};
use futures::{Stream, StreamExt};
use serde_json::{Value, json};

use crate::{Cluster, PATIENCE};

impl Cluster {
    /// POST `path` with a JSON body and `key`; returns status and body.
    pub async fn post(
        &self,
        path: &str,
        key: Option<&str>,
        body: &Value,
    ) -> anyhow::Result<(u16, Value)> {
        let mut request = self
            .http
            .post(format!("{}{path}", self.base_url))
            .json(body);
        if let Some(key) = key {
            request = request.header("X-Api-Key", key);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        Ok((status, response.json().await.unwrap_or(Value::Null)))
    }

    /// Any request with `credential`: an API key (`axon_…`, as `X-Api-Key`) or an access
    /// token (as `Authorization: Bearer`); returns status and JSON body.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        credential: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base_url));
        request = if credential.starts_with("axon_") {
            request.header("X-Api-Key", credential)
        } else {
            request.bearer_auth(credential)
        };
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        Ok((status, response.json().await.unwrap_or(Value::Null)))
    }

    /// GET `path` with `key`; returns status and JSON body.
    pub async fn get(&self, path: &str, key: Option<&str>) -> anyhow::Result<(u16, Value)> {
        let mut request = self.http.get(format!("{}{path}", self.base_url));
        if let Some(key) = key {
            request = request.header("X-Api-Key", key);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        Ok((status, response.json().await.unwrap_or(Value::Null)))
    }

    /// Cancels a task with this cluster's key; returns status and body.
    pub async fn cancel(&self, task: &str) -> anyhow::Result<(u16, Value)> {
        self.post(
            &format!("/mcp/tasks/{task}/cancel"),
            Some(&self.api_key),
            &json!({}),
        )
        .await
    }

    /// Starts a task with this cluster's key; returns its id.
    pub async fn start_task(&self, body: Value) -> anyhow::Result<String> {
        let (status, answer) = self
            .post("/mcp/start_task", Some(&self.api_key), &body)
            .await?;
        if status != 200 {
            bail!("start_task answered {status}: {answer}");
        }
        Ok(answer["task_id"].as_str().context("no task_id")?.to_owned())
    }

    /// Opens the SSE stream of a task; `last_event_id` sets the header.
    pub async fn sse(
        &self,
        task: &str,
        query: &str,
        last_event_id: Option<u64>,
    ) -> anyhow::Result<impl Stream<Item = Value> + Unpin + use<>> {
        let mut request = self
            .http
            .get(format!("{}/mcp/tasks/{task}/stream{query}", self.base_url))
            .header("X-Api-Key", &self.api_key);
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id.to_string());
        }
        open_sse(request).await
    }

    /// Streams a task from the start to its terminal event.
    pub async fn stream_to_end(&self, task: &str) -> anyhow::Result<Vec<Value>> {
        collect_to_end(self.sse(task, "", None).await?).await
    }
}

/// Sends an SSE request and returns its events' `data` as JSON, checking `id` and `event`.
pub async fn open_sse(
    request: reqwest::RequestBuilder,
) -> anyhow::Result<impl Stream<Item = Value> + Unpin + use<>> {
    let response = request.send().await?;
    if response.status() != 200 {
        bail!(
            "stream answered {}: {}",
            response.status(),
            response.text().await?
        );
    }
    Ok(Box::pin(response.bytes_stream().eventsource().filter_map(
        |event: Result<Event, _>| async move {
            let event = event.ok()?;
            let data: Value = serde_json::from_str(&event.data).ok()?;
            assert_eq!(event.id, data["seq"].to_string(), "SSE id is the seq");
            assert_eq!(event.event, data["kind"].as_str()?, "SSE event is the kind");
            Some(data)
        },
    )))
}

/// Reads events until the terminal one (and checks the stream then ends).
pub async fn collect_to_end(
    mut events: impl Stream<Item = Value> + Unpin,
) -> anyhow::Result<Vec<Value>> {
    let mut seen = Vec::new();
    loop {
        let event = tokio::time::timeout(PATIENCE, events.next())
            .await
            .context("no event in time")?
            .with_context(|| format!("stream ended before a terminal event after {seen:?}"))?;
        let terminal = is_terminal(&event);
        seen.push(event);
        if terminal {
            break;
        }
    }
    let after = tokio::time::timeout(PATIENCE, events.next())
        .await
        .context("stream stayed open")?;
    assert!(
        after.is_none(),
        "an event followed the terminal one: {after:?}"
    );
    Ok(seen)
}

/// Reads the stream until an event of `kind`; returns all read so far and the stream.
pub async fn until_kind<S: Stream<Item = Value> + Unpin>(
    mut stream: S,
    kind: &str,
) -> anyhow::Result<(Vec<Value>, S)> {
    let mut seen = Vec::new();
    loop {
        let event = tokio::time::timeout(PATIENCE, stream.next())
            .await
            .context("no event in time")?
            .with_context(|| format!("the stream ended before a {kind} event"))?;
        let found = event["kind"] == kind;
        seen.push(event);
        if found {
            return Ok((seen, stream));
        }
    }
}

/// Whether an envelope's kind ends a task.
pub fn is_terminal(event: &Value) -> bool {
    matches!(
        event["kind"].as_str(),
        Some("succeeded" | "failed" | "canceled" | "timeout")
    )
}

/// The kinds of a list of envelopes.
pub fn kinds(events: &[Value]) -> Vec<&str> {
    events.iter().filter_map(|e| e["kind"].as_str()).collect()
}

/// The attempt of each `started` event in a list of envelopes.
pub fn attempts(events: &[Value]) -> Vec<u64> {
    events
        .iter()
        .filter(|e| e["kind"] == "started")
        .filter_map(|e| e["payload"]["attempt"].as_u64())
        .collect()
}

/// Reads `stream` up to its first `stdout` line and parses it (a pid, a uid).
pub async fn first_stdout<T>(
    mut stream: impl Stream<Item = Value> + Unpin,
) -> anyhow::Result<(T, impl Stream<Item = Value> + Unpin)>
where
    T: std::str::FromStr,
    T::Err: std::error::Error + Send + Sync + 'static,
{
    loop {
        let event = tokio::time::timeout(PATIENCE, stream.next())
            .await?
            .context("the stream ended before any stdout line")?;
        if event["kind"] == "stdout" {
            let line = event["payload"]["line"].as_str().unwrap_or_default();
            return Ok((line.trim().parse()?, stream));
        }
    }
}
