//! The session store: a client's `initialize` parameters, so another process (or this one
//! after a restart) can restore the session without a new handshake.

use redis::aio::ConnectionManager;
use rmcp::transport::streamable_http_server::session::{
    SessionState, SessionStore, SessionStoreError,
};

use super::{SESSION_TTL_S, session_key};

/// Sessions in Redis hashes `mcp:session:{id}` (field `state`).
pub struct RedisSessionStore {
    redis: ConnectionManager,
}

impl RedisSessionStore {
    /// A store over a shared connection.
    pub fn new(redis: ConnectionManager) -> Self {
        Self { redis }
    }
}

#[async_trait::async_trait]
impl SessionStore for RedisSessionStore {
    async fn load(&self, session_id: &str) -> Result<Option<SessionState>, SessionStoreError> {
        let state: Option<String> = redis::cmd("HGET")
            .arg(session_key(session_id))
            .arg("state")
            .query_async(&mut self.redis.clone())
            .await?;
        Ok(match state {
            Some(json) => Some(serde_json::from_str(&json)?),
            None => None,
        })
    }

    async fn store(&self, session_id: &str, state: &SessionState) -> Result<(), SessionStoreError> {
        let key = session_key(session_id);
        let json = serde_json::to_string(state)?;
        redis::pipe()
            .hset(&key, "state", json)
            .ignore()
            .expire(&key, SESSION_TTL_S)
            .ignore()
            .query_async::<()>(&mut self.redis.clone())
            .await?;
        Ok(())
    }

    async fn delete(&self, session_id: &str) -> Result<(), SessionStoreError> {
        redis::cmd("DEL")
            .arg(session_key(session_id))
            .query_async::<()>(&mut self.redis.clone())
            .await?;
        Ok(())
    }
}
