//! The event store behind `Last-Event-ID` resumability: every message of a resumable SSE
//! stream is appended to a Redis Stream before it is sent, under an id that names the
//! stream, so a client whose connection was cut resumes on any process, after any
//! restart, and gets each message once.
//!
//! Event ids are `{stream_id}/{entry_id}` (`entry_id` is the Redis Stream entry id).

use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::streams::StreamRangeReply;
use rmcp::model::ServerJsonRpcMessage;
use rmcp::transport::streamable_http_server::session::{
    EventId, EventStore, EventStoreError, EventStream, ServerSseMessage,
};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

/// How long a stream's messages are kept after the last one.
const STREAM_TTL_S: i64 = 3600;
/// How often a resumed stream looks for messages its producer appends later.
const POLL: Duration = Duration::from_millis(50);
/// Messages read per round trip.
const PAGE: usize = 100;

fn stream_key(stream_id: &str) -> String {
    format!("mcp:sse:{stream_id}")
}

/// One stored message: a JSON-RPC message, or a priming event (`retry` only).
#[derive(Serialize, Deserialize)]
struct Stored {
    message: Option<ServerJsonRpcMessage>,
    retry_ms: Option<u64>,
}

/// Resumable SSE streams in Redis.
pub struct RedisEventStore {
    redis: ConnectionManager,
}

impl RedisEventStore {
    /// A store over a shared connection.
    pub fn new(redis: ConnectionManager) -> Self {
        Self { redis }
    }
}

/// Why a `Last-Event-ID` cannot be resumed.
#[derive(Debug, thiserror::Error)]
#[error("Last-Event-ID '{0}' names no stored stream; send the request again")]
struct UnknownEvent(String);

fn parse_event_id(id: &str) -> Option<(&str, &str)> {
    let (stream, entry) = id.rsplit_once('/')?;
    let (ms, n) = entry.split_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    (!stream.is_empty() && digits(ms) && digits(n)).then_some((stream, entry))
}

/// Whether a message ends its request's stream (a response or an error to the request).
fn is_final(message: &ServerJsonRpcMessage) -> bool {
    matches!(
        message,
        ServerJsonRpcMessage::Response(_) | ServerJsonRpcMessage::Error(_)
    )
}

#[async_trait::async_trait]
impl EventStore for RedisEventStore {
    async fn store_event(
        &self,
        stream_id: &str,
        event: &ServerSseMessage,
    ) -> Result<EventId, EventStoreError> {
        let stored = Stored {
            message: event.message.as_deref().cloned(),
            retry_ms: event
                .retry
                .map(|r| u64::try_from(r.as_millis()).unwrap_or(u64::MAX)),
        };
        let key = stream_key(stream_id);
        let (entry, _): (String, i64) = redis::pipe()
            .cmd("XADD")
            .arg(&key)
            .arg("*")
            .arg("m")
            .arg(serde_json::to_string(&stored)?)
            .expire(&key, STREAM_TTL_S)
            .query_async(&mut self.redis.clone())
            .await?;
        Ok(format!("{stream_id}/{entry}"))
    }

    async fn replay_events_after(
        &self,
        last_event_id: &str,
    ) -> Result<EventStream, EventStoreError> {
        let (stream_id, entry) =
            parse_event_id(last_event_id).ok_or_else(|| UnknownEvent(last_event_id.to_owned()))?;
        let key = stream_key(stream_id);
        let exists: bool = redis::cmd("EXISTS")
            .arg(&key)
            .query_async(&mut self.redis.clone())
            .await?;
        if !exists {
            return Err(UnknownEvent(last_event_id.to_owned()).into());
        }
        let (sender, mut receiver) = mpsc::channel(PAGE);
        tokio::spawn(tail(
            self.redis.clone(),
            Arc::from(stream_id),
            key,
            entry.to_owned(),
            sender,
        ));
        Ok(Box::pin(futures::stream::poll_fn(move |cx| {
            receiver.poll_recv(cx)
        })))
    }
}

/// Sends the stream's messages after `cursor`, then those appended later, until the
/// request's final message, the client leaves, or the stream expires.
async fn tail(
    mut redis: ConnectionManager,
    stream_id: Arc<str>,
    key: String,
    mut cursor: String,
    sender: mpsc::Sender<ServerSseMessage>,
) {
    loop {
        if sender.is_closed() {
            return;
        }
        let page: StreamRangeReply = match redis::cmd("XRANGE")
            .arg(&key)
            .arg(format!("({cursor}"))
            .arg("+")
            .arg("COUNT")
            .arg(PAGE)
            .query_async(&mut redis)
            .await
        {
            Ok(page) => page,
            Err(e) => {
                tracing::warn!(error = %e, stream = %stream_id, "resumed MCP stream lost Redis");
                return;
            }
        };
        if page.ids.is_empty() {
            let alive: bool = redis::cmd("EXISTS")
                .arg(&key)
                .query_async(&mut redis)
                .await
                .unwrap_or(false);
            if !alive {
                return;
            }
            tokio::time::sleep(POLL).await;
            continue;
        }
        for entry in page.ids {
            cursor = entry.id.clone();
            let Some(stored) = entry
                .get::<String>("m")
                .and_then(|json| serde_json::from_str::<Stored>(&json).ok())
            else {
                tracing::warn!(stream = %stream_id, entry = %entry.id, "unreadable MCP stream entry skipped");
                continue;
            };
            let finished = stored.message.as_ref().is_some_and(is_final);
            let event_id = format!("{stream_id}/{}", entry.id);
            let message = match stored.message {
                Some(message) => ServerSseMessage::new(event_id, message),
                None => ServerSseMessage::priming(
                    event_id,
                    Duration::from_millis(stored.retry_ms.unwrap_or_default()),
                ),
            };
            if sender.send(message).await.is_err() || finished {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_name_a_stream_and_an_entry() {
        assert_eq!(
            parse_event_id("0193a1b2-c3d4/1700000000000-3"),
            Some(("0193a1b2-c3d4", "1700000000000-3"))
        );
        assert_eq!(
            parse_event_id("sess:common/17-0"),
            Some(("sess:common", "17-0"))
        );
        for bad in ["", "17-0", "/17-0", "s/17", "s/x-0", "s/17-", "s/-1"] {
            assert_eq!(parse_event_id(bad), None, "{bad}");
        }
    }
}
