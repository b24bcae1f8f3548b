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
use uuid::Uuid;

use super::calls;

/// How long a stream's messages are kept after the last one: long enough for any client to
/// reconnect (they retry within seconds), short enough that idle streams cost nothing.
const STREAM_TTL_S: i64 = 900;
/// Messages a stream keeps (older progress notifications of a very long call are dropped;
/// the answer is always the newest).
const MAX_MESSAGES: usize = 10_000;
/// How often a resumed stream looks for messages its producer appends later.
const POLL: Duration = Duration::from_millis(100);
/// Messages read per round trip.
const PAGE: usize = 100;
/// The reconnection delay a replayed priming event suggests.
const PRIMING_RETRY: Duration = Duration::from_secs(3);

fn stream_key(stream_id: &str) -> String {
    format!("mcp:sse:{stream_id}")
}

/// One stored message: a JSON-RPC message, or a priming event (`retry` only).
#[derive(Serialize, Deserialize)]
struct Stored {
    message: Option<ServerJsonRpcMessage>,
    retry_ms: Option<u64>,
}

/// Finishes a tool call whose owner died, appending its remaining messages to its stream.
pub trait Takeover: Send + Sync + 'static {
    /// Starts finishing the call behind `stream_id` (this process now owns it).
    fn finish(&self, stream_id: String);
}

/// Resumable SSE streams in Redis.
pub struct RedisEventStore {
    redis: ConnectionManager,
    /// This process (its lease names it as the owner of the calls it runs).
    me: Uuid,
    takeover: Arc<dyn Takeover>,
}

impl RedisEventStore {
    /// A store over a shared connection; `takeover` finishes calls whose owner died.
    pub fn new(redis: ConnectionManager, me: Uuid, takeover: Arc<dyn Takeover>) -> Self {
        Self {
            redis,
            me,
            takeover,
        }
    }
}

/// Appends a message to a stream; returns its event id.
pub async fn append(
    redis: &ConnectionManager,
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
    let (entry, _, _): (String, i64, i64) = redis::pipe()
        .cmd("XADD")
        .arg(&key)
        .arg("MAXLEN")
        .arg("~")
        .arg(MAX_MESSAGES)
        .arg("*")
        .arg("m")
        .arg(serde_json::to_string(&stored)?)
        .expire(&key, STREAM_TTL_S)
        .expire(calls::call_key(stream_id), STREAM_TTL_S)
        .query_async(&mut redis.clone())
        .await?;
    Ok(format!("{stream_id}/{entry}"))
}

/// One stored message of a stream.
pub struct Entry {
    /// Its Redis Stream entry id.
    pub id: String,
    /// The JSON-RPC message (none for a priming event, or if unreadable).
    pub message: Option<ServerJsonRpcMessage>,
    retry: Option<Duration>,
}

/// The messages stored after `cursor` (exclusive; `-` for all), at most [`PAGE`].
pub async fn read_after(
    redis: &ConnectionManager,
    stream_id: &str,
    cursor: &str,
) -> redis::RedisResult<Vec<Entry>> {
    let start = if cursor == "-" {
        "-".to_owned()
    } else {
        format!("({cursor}")
    };
    let page: StreamRangeReply = redis::cmd("XRANGE")
        .arg(stream_key(stream_id))
        .arg(start)
        .arg("+")
        .arg("COUNT")
        .arg(PAGE)
        .query_async(&mut redis.clone())
        .await?;
    Ok(page
        .ids
        .into_iter()
        .map(|entry| {
            let stored = entry
                .get::<String>("m")
                .and_then(|json| serde_json::from_str::<Stored>(&json).ok());
            let (message, retry) = match stored {
                Some(stored) => (stored.message, stored.retry_ms.map(Duration::from_millis)),
                None => (None, None),
            };
            Entry {
                id: entry.id,
                message,
                retry,
            }
        })
        .collect())
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
        append(&self.redis, stream_id, event).await
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
        let tail = Tail {
            redis: self.redis.clone(),
            stream_id: Arc::from(stream_id),
            key,
            me: self.me,
            takeover: self.takeover.clone(),
        };
        tokio::spawn(tail.run(entry.to_owned(), sender));
        Ok(Box::pin(futures::stream::poll_fn(move |cx| {
            receiver.poll_recv(cx)
        })))
    }
}

/// How many idle polls pass between two looks at whether the call's owner is alive.
const OWNER_CHECK_EVERY: u32 = 10;

/// One resumed stream's reader.
struct Tail {
    redis: ConnectionManager,
    stream_id: Arc<str>,
    key: String,
    me: Uuid,
    takeover: Arc<dyn Takeover>,
}

impl Tail {
    /// Sends the stream's messages after `cursor`, then those appended later, until the
    /// request's final message, the client leaves, or the stream expires. When the call's
    /// owner died, this process takes the call over.
    async fn run(self, mut cursor: String, sender: mpsc::Sender<ServerSseMessage>) {
        let mut idle_polls = 0;
        loop {
            if sender.is_closed() {
                return;
            }
            let page = match read_after(&self.redis, &self.stream_id, &cursor).await {
                Ok(page) => page,
                Err(e) => {
                    tracing::warn!(error = %e, stream = %self.stream_id, "resumed MCP stream lost Redis");
                    return;
                }
            };
            if page.is_empty() {
                if !self.idle(&mut idle_polls).await {
                    return;
                }
                continue;
            }
            idle_polls = 0;
            for entry in page {
                let event_id = format!("{}/{}", self.stream_id, entry.id);
                cursor = entry.id;
                let finished = entry.message.as_ref().is_some_and(is_final);
                let event = match entry.message {
                    Some(message) => ServerSseMessage::new(event_id, message),
                    None => {
                        ServerSseMessage::priming(event_id, entry.retry.unwrap_or(PRIMING_RETRY))
                    }
                };
                if sender.send(event).await.is_err() || finished {
                    return;
                }
            }
        }
    }

    /// Waits a poll; now and then checks the stream still exists and takes its call over
    /// if the owner died. False when there is nothing more to wait for.
    async fn idle(&self, polls: &mut u32) -> bool {
        *polls += 1;
        if *polls % OWNER_CHECK_EVERY == 1 {
            let mut redis = self.redis.clone();
            let alive: bool = redis::cmd("EXISTS")
                .arg(&self.key)
                .query_async(&mut redis)
                .await
                .unwrap_or(false);
            if !alive {
                return false;
            }
            match calls::claim(&self.redis, &self.stream_id, self.me).await {
                Ok(true) => {
                    tracing::info!(stream = %self.stream_id, "taking over an MCP call whose process stopped");
                    self.takeover.finish(self.stream_id.to_string());
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "could not check an MCP call's owner"),
            }
        }
        tokio::time::sleep(POLL).await;
        true
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

#[cfg(test)]
mod roundtrip {
    use rmcp::model::{
        CallToolResult, ContentBlock, JsonRpcResponse, JsonRpcVersion2_0, RequestId, ServerResult,
    };
    use serde_json::{Value, json};

    use super::*;

    fn round_trip(json: &str) -> Value {
        let back: Stored = serde_json::from_str(json).expect("parses");
        serde_json::to_value(&back).expect("serializes")
    }

    #[test]
    fn stored_messages_come_back_unchanged() {
        let mut result = CallToolResult::structured(
            json!({"events": [], "next_seq": 3, "state": "running", "done": false}),
        );
        result.content = vec![ContentBlock::text("0 events")];
        result.result_type = None;
        let message = ServerJsonRpcMessage::Response(JsonRpcResponse {
            jsonrpc: JsonRpcVersion2_0,
            id: RequestId::Number(7),
            result: ServerResult::CallToolResult(result),
        });
        let stored = Stored {
            message: Some(message),
            retry_ms: None,
        };
        let json = serde_json::to_string(&stored).expect("serializes");
        assert_eq!(
            round_trip(&json),
            serde_json::from_str::<Value>(&json).expect("json")
        );
        let progress = r#"{"message":{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":"t","progress":2.0,"message":"stdout: hi","_meta":{"io.axontask/last_seq":4}}},"retry_ms":null}"#;
        assert_eq!(
            round_trip(progress),
            serde_json::from_str::<Value>(progress).expect("json")
        );
    }
}
