//! What MCP keeps in Redis so that any `axontask` process can serve any client: sessions
//! (the client's `initialize` parameters and its tenant) and the messages of resumable SSE
//! streams.
//!
//! Keys: `mcp:session:{id}` (hash: `state`, `tenant`; expires a day after last use) and
//! `mcp:sse:{stream_id}` (a Redis Stream of the stream's messages; expires 15 minutes after
//! the last one).

pub mod calls;
pub mod events;
mod sessions;

use redis::aio::ConnectionManager;
use shared::ids::TenantId;

pub use events::RedisEventStore;
pub use sessions::RedisSessionStore;

/// How long a session lives after its last request.
const SESSION_TTL_S: i64 = 24 * 3600;

fn session_key(id: &str) -> String {
    format!("mcp:session:{id}")
}

/// The tenant a session is bound to (refreshing its expiry), if it is bound.
pub async fn session_tenant(
    redis: &ConnectionManager,
    session: &str,
) -> redis::RedisResult<Option<TenantId>> {
    let key = session_key(session);
    let (tenant, _): (Option<String>, i64) = redis::pipe()
        .hget(&key, "tenant")
        .expire(&key, SESSION_TTL_S)
        .query_async(&mut redis.clone())
        .await?;
    // A value that is not a tenant id binds the session to nobody.
    Ok(tenant.map(|t| t.parse().unwrap_or(TenantId(uuid::Uuid::nil()))))
}

/// Binds a new session to the tenant that opened it.
pub async fn bind_session(
    redis: &ConnectionManager,
    session: &str,
    tenant: TenantId,
) -> redis::RedisResult<()> {
    let key = session_key(session);
    redis::pipe()
        .hset(&key, "tenant", tenant.to_string())
        .ignore()
        .expire(&key, SESSION_TTL_S)
        .ignore()
        .query_async(&mut redis.clone())
        .await
}
