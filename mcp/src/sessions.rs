//! 2025-11-25 sessions: rmcp's session manager, plus what makes a cut stream resumable on
//! any process. Each request gets a [`CallId`] and, beside its stream in Redis, a record of
//! the request and of the process running it, so that if that process dies, the process
//! the client resumes on can finish a tool call (see [`crate::takeover`]) or say that the
//! request must be sent again. A stream resumes only within the session it belongs to.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::request::Parts;
use futures::{Stream, StreamExt};
use redis::aio::ConnectionManager;
use rmcp::model::{ClientJsonRpcMessage, GetExtensions, ServerJsonRpcMessage};
use rmcp::transport::streamable_http_server::session::local::{
    LocalSessionManager, LocalSessionManagerError,
};
use rmcp::transport::streamable_http_server::session::{
    EventStore, RestoreOutcome, ServerSseMessage, SessionId, SessionManager,
};
use shared::auth::Principal;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::store::calls::{self, CallRecord};

/// A tool call's own id, in the request's extensions: what it starts is keyed by it, so a
/// call finished by another process starts nothing twice.
#[derive(Debug, Clone, Copy)]
pub struct CallId(pub Uuid);

/// Why a session operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// rmcp's session manager refused it.
    #[error(transparent)]
    Local(#[from] LocalSessionManagerError),
    /// A `Last-Event-ID` of another session's stream.
    #[error("Last-Event-ID {0} names a stream of another session")]
    ForeignStream(String),
    /// Redis failed.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
}

/// The open response streams of this process's calls, so a call can end its own stream
/// early (SEP-1699 polling): the client reconnects with `Last-Event-ID` and gets the rest
/// from the store.
#[derive(Default)]
pub struct Closers(Mutex<HashMap<Uuid, CancellationToken>>);

impl Closers {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, CancellationToken>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Ends the response stream of `call` at its next message (which stays in the store).
    pub fn close(&self, call: Uuid) {
        if let Some(token) = self.lock().get(&call) {
            token.cancel();
        }
    }
}

/// Forgets a call's closer when its stream is dropped.
struct Forget(Arc<Closers>, Uuid);

impl Drop for Forget {
    fn drop(&mut self) {
        self.0.lock().remove(&self.1);
    }
}

/// Sessions in this process, their resumable streams in Redis.
pub struct DurableSessions {
    inner: LocalSessionManager,
    redis: ConnectionManager,
    /// This process, the owner of the calls it runs.
    me: Uuid,
    closers: Arc<Closers>,
}

impl DurableSessions {
    /// `inner` must store its streams' events in Redis (with the crate's event store).
    pub fn new(
        inner: LocalSessionManager,
        redis: ConnectionManager,
        me: Uuid,
        closers: Arc<Closers>,
    ) -> Self {
        Self {
            inner,
            redis,
            me,
            closers,
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Gives a request its call id and returns the record another process needs to finish
/// it (or, for anything but a tool call, to answer that it must be sent again).
fn prepare(message: &mut ClientJsonRpcMessage, session: &SessionId) -> Option<CallRecord> {
    let request_json = serde_json::to_value(&*message).ok()?;
    let ClientJsonRpcMessage::Request(request) = message else {
        return None;
    };
    let caller = request
        .request
        .extensions()
        .get::<Parts>()?
        .extensions
        .get::<Principal>()?
        .clone();
    let call_id = Uuid::now_v7();
    request.request.extensions_mut().insert(CallId(call_id));
    Some(CallRecord {
        session: session.to_string(),
        tenant: caller.tenant_id,
        key_id: caller.key_id,
        scopes: caller.scopes,
        request: request_json,
        call_id,
        started_ms: now_ms(),
    })
}

/// The stream a `Last-Event-ID` names (`{stream_id}/{entry}`).
fn stream_of(event_id: &str) -> Option<&str> {
    event_id.rsplit_once('/').map(|(stream, _)| stream)
}

impl SessionManager for DurableSessions {
    type Error = Error;
    type Transport = <LocalSessionManager as SessionManager>::Transport;

    async fn create_session(&self) -> Result<(SessionId, Self::Transport), Self::Error> {
        Ok(self.inner.create_session().await?)
    }

    async fn initialize_session(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<ServerJsonRpcMessage, Self::Error> {
        Ok(self.inner.initialize_session(id, message).await?)
    }

    async fn has_session(&self, id: &SessionId) -> Result<bool, Self::Error> {
        Ok(self.inner.has_session(id).await?)
    }

    async fn close_session(&self, id: &SessionId) -> Result<(), Self::Error> {
        Ok(self.inner.close_session(id).await?)
    }

    async fn create_stream(
        &self,
        id: &SessionId,
        mut message: ClientJsonRpcMessage,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        let call = prepare(&mut message, id);
        let closer = CancellationToken::new();
        let forget = call.as_ref().map(|call| {
            self.closers.lock().insert(call.call_id, closer.clone());
            Forget(self.closers.clone(), call.call_id)
        });
        let mut stream = Box::pin(self.inner.create_stream(id, message).await?);
        // The first message is the stream's priming event, stored before the request runs:
        // its id names the stream.
        let first = stream.next().await;
        let stream_id = first
            .as_ref()
            .and_then(|m| m.event_id.as_deref())
            .and_then(stream_of);
        if let (Some(call), Some(stream_id)) = (call, stream_id)
            && let Err(e) = calls::record(&self.redis, stream_id, self.me, &call).await
        {
            tracing::warn!(error = %e, "MCP call not recorded; it cannot be finished elsewhere");
        }
        let open = move |_: &ServerSseMessage| {
            let _keep = &forget;
            futures::future::ready(!closer.is_cancelled())
        };
        // The priming event always goes out: it is what the client resumes from.
        Ok(futures::stream::iter(first).chain(stream.take_while(open)))
    }

    async fn accept_message(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<(), Self::Error> {
        Ok(self.inner.accept_message(id, message).await?)
    }

    async fn create_standalone_stream(
        &self,
        id: &SessionId,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        Ok(self.inner.create_standalone_stream(id).await?)
    }

    async fn resume(
        &self,
        id: &SessionId,
        last_event_id: String,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        let common = format!("{id}:common");
        // rmcp primes the GET stream with id 0: resume that stream from its start.
        let last_event_id = if last_event_id == "0" {
            format!("{common}/0-0")
        } else {
            last_event_id
        };
        let stream = stream_of(&last_event_id).unwrap_or_default();
        if stream != common {
            let owner = calls::load(&self.redis, stream).await?;
            if owner.is_none_or(|call| call.session != id.as_ref()) {
                return Err(Error::ForeignStream(last_event_id));
            }
        }
        Ok(self.inner.resume(id, last_event_id).await?)
    }

    async fn restore_session(
        &self,
        id: SessionId,
    ) -> Result<RestoreOutcome<Self::Transport>, Self::Error> {
        Ok(self.inner.restore_session(id).await?)
    }

    fn event_store(&self) -> Option<Arc<dyn EventStore>> {
        // Only session streams are resumable: a stateless stream has no session to tie it
        // to its tenant, so it is not stored (2026-07-28 clients resume with resume_task).
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_name_their_stream() {
        assert_eq!(stream_of("abc/17-0"), Some("abc"));
        assert_eq!(stream_of("s:common/17-0"), Some("s:common"));
        assert_eq!(stream_of("0"), None);
    }
}
