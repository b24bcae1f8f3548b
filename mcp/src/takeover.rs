//! Finishing a tool call whose process died. The process a client resumes on claims the
//! call once the owner's lease lapsed, reads from the call's stream what was already sent
//! (how many progress notifications, up to which seq), runs the call again from there with
//! the same call id, and appends the rest (more progress, then the result) to the stream,
//! which the client is reading. So the client sees every message exactly once.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::aio::ConnectionManager;
use rmcp::model::{
    ErrorData as McpError, JsonObject, JsonRpcError, JsonRpcResponse, JsonRpcVersion2_0,
    ProgressToken, RequestId, ServerJsonRpcMessage, ServerNotification, ServerResult,
};
use rmcp::transport::streamable_http_server::session::ServerSseMessage;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::Backend;
use crate::calls::{self, Invocation};
use crate::store::calls as records;
use crate::store::calls::CallRecord;
use crate::store::events::{self, Takeover};
use crate::watch::{Progress, SEQ_META};

/// Finishes calls for the event store (which decides when one needs finishing).
pub struct Finisher {
    backend: Backend,
    redis: ConnectionManager,
    shutdown: CancellationToken,
}

impl Finisher {
    /// A finisher running calls on `backend` until `shutdown`.
    pub fn new(backend: Backend, redis: ConnectionManager, shutdown: CancellationToken) -> Self {
        Self {
            backend,
            redis,
            shutdown,
        }
    }
}

impl Takeover for Finisher {
    fn finish(&self, stream_id: String) {
        let (backend, redis) = (self.backend.clone(), self.redis.clone());
        let shutdown = self.shutdown.child_token();
        tokio::spawn(async move {
            if let Err(e) = finish(backend, redis, &stream_id, shutdown).await {
                tracing::warn!(stream = %stream_id, error = %e, "could not finish an MCP call taken over");
            }
        });
    }
}

/// The parts of a recorded request a call needs.
#[derive(Deserialize)]
struct Request {
    id: RequestId,
    method: String,
    #[serde(default)]
    params: Params,
}

#[derive(Default, Deserialize)]
struct Params {
    #[serde(default)]
    name: String,
    arguments: Option<JsonObject>,
    #[serde(rename = "_meta")]
    meta: Option<Meta>,
}

#[derive(Deserialize)]
struct Meta {
    #[serde(rename = "progressToken")]
    progress_token: Option<ProgressToken>,
}

/// What the dead owner already sent.
#[derive(Default)]
struct Sent {
    finished: bool,
    progress: u32,
    reported: u64,
}

async fn already_sent(redis: &ConnectionManager, stream_id: &str) -> redis::RedisResult<Sent> {
    let mut sent = Sent::default();
    let mut cursor = "-".to_owned();
    loop {
        let page = events::read_after(redis, stream_id, &cursor).await?;
        let Some(last) = page.last() else {
            return Ok(sent);
        };
        cursor = last.id.clone();
        for entry in page {
            match entry.message {
                Some(ServerJsonRpcMessage::Response(_) | ServerJsonRpcMessage::Error(_)) => {
                    sent.finished = true;
                }
                Some(ServerJsonRpcMessage::Notification(note)) => {
                    if let ServerNotification::ProgressNotification(progress) = note.notification {
                        // Counts are small integers; the float is exact.
                        sent.progress = progress.params.progress as u32;
                        sent.reported = progress
                            .params
                            .meta
                            .and_then(|meta| meta.0.get(SEQ_META).and_then(|v| v.as_u64()))
                            .unwrap_or(sent.reported);
                    }
                }
                _ => {}
            }
        }
    }
}

async fn finish(
    backend: Backend,
    redis: ConnectionManager,
    stream_id: &str,
    shutdown: CancellationToken,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let Some(record) = records::load(&redis, stream_id).await? else {
        return Ok(());
    };
    let sent = already_sent(&redis, stream_id).await?;
    if sent.finished {
        return Ok(());
    }
    let request: Request = serde_json::from_value(record.request.clone())?;
    let answer = answer(
        &backend, &redis, stream_id, &record, &request, &sent, shutdown,
    )
    .await;
    let message = match answer {
        Ok(mut result) => {
            result.strip_result_type_for_legacy_peer();
            ServerJsonRpcMessage::Response(JsonRpcResponse {
                jsonrpc: JsonRpcVersion2_0,
                id: request.id,
                result,
            })
        }
        Err(error) => ServerJsonRpcMessage::Error(JsonRpcError {
            jsonrpc: JsonRpcVersion2_0,
            id: Some(request.id),
            error,
        }),
    };
    events::append(&redis, stream_id, &ServerSseMessage::from_message(message)).await?;
    Ok(())
}

/// Runs the call again from where its owner stopped.
async fn answer(
    backend: &Backend,
    redis: &ConnectionManager,
    stream_id: &str,
    record: &CallRecord,
    request: &Request,
    sent: &Sent,
    shutdown: CancellationToken,
) -> Result<ServerResult, McpError> {
    let name = request.params.name.as_str();
    if request.method != "tools/call" || !calls::rerunnable(name) {
        return Err(McpError::internal_error(
            format!(
                "the server process answering this {} stopped before it answered; send it again{}",
                request.method,
                if name == "start_task" {
                    " (with an idempotency_key, so a task it did start is not started twice; list_tasks shows recent tasks)"
                } else {
                    ""
                }
            ),
            None,
        ));
    }
    let token = request
        .params
        .meta
        .as_ref()
        .and_then(|meta| meta.progress_token.clone());
    let waited = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .saturating_sub(record.started_ms);
    let mut call = Invocation {
        progress: Progress::resumed(
            redis.clone(),
            stream_id.to_owned(),
            token,
            sent.progress,
            sent.reported,
        ),
        cancel: shutdown,
        wants_task: false,
        call_id: record.call_id,
        waited: Duration::from_millis(waited),
    };
    let caller = record.principal();
    let response = calls::dispatch(
        backend,
        &caller,
        name,
        request.params.arguments.clone(),
        &mut call,
    )
    .await
    .ok_or_else(|| {
        McpError::internal_error(
            format!("the server process answering this call of {name} stopped before it answered; send it again"),
            None,
        )
    })?;
    Ok(ServerResult::from(response))
}
