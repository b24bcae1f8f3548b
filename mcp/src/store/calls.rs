//! Tool calls in flight on resumable streams, and which process runs each: the record a
//! process needs to finish a call whose process died (its "owner"), and each process's
//! liveness lease.
//!
//! Keys: `mcp:call:{stream_id}` (hash; expires with the stream) and `mcp:instance:{id}`
//! (a lease the owner renews every second; gone a few seconds after it dies, at once
//! when it stops cleanly).

use std::time::Duration;

use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use shared::auth::Principal;
use shared::ids::TenantId;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// How long a process's lease outlives its last renewal.
const LEASE: Duration = Duration::from_secs(3);
/// How often a process renews its lease.
const RENEW: Duration = Duration::from_secs(1);
/// How long a call record is kept (its stream's appends extend it, as they extend the stream).
const CALL_TTL_S: i64 = 900;

/// The key of the call record behind `stream_id`.
pub fn call_key(stream_id: &str) -> String {
    format!("mcp:call:{stream_id}")
}

fn instance_key(instance: Uuid) -> String {
    format!("mcp:instance:{instance}")
}

/// A tool call as a process other than its owner needs it to finish the call.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CallRecord {
    /// The session the call belongs to.
    pub session: String,
    /// The caller's tenant.
    pub tenant: TenantId,
    /// The caller's key (resume tokens name it; nil in records of older versions).
    #[serde(default)]
    pub key_id: Uuid,
    /// The caller's scopes.
    pub scopes: Vec<String>,
    /// The JSON-RPC request, as the client sent it.
    pub request: serde_json::Value,
    /// The call's own id (idempotency for what the call starts).
    pub call_id: Uuid,
    /// When the call began (Unix milliseconds).
    pub started_ms: u64,
}

impl CallRecord {
    /// The caller, as the record remembers it.
    pub fn principal(&self) -> Principal {
        Principal {
            tenant_id: self.tenant,
            key_id: self.key_id,
            scopes: self.scopes.clone(),
        }
    }
}

/// Stores the record of the call behind `stream_id`, owned by `owner`.
pub async fn record(
    redis: &ConnectionManager,
    stream_id: &str,
    owner: Uuid,
    call: &CallRecord,
) -> redis::RedisResult<()> {
    let key = call_key(stream_id);
    let json = serde_json::to_string(call).expect("call records serialize");
    redis::pipe()
        .hset(&key, "owner", owner.to_string())
        .ignore()
        .hset(&key, "call", json)
        .ignore()
        .expire(&key, CALL_TTL_S)
        .ignore()
        .query_async(&mut redis.clone())
        .await
}

/// The record of the call behind `stream_id`, if it has one.
pub async fn load(
    redis: &ConnectionManager,
    stream_id: &str,
) -> redis::RedisResult<Option<CallRecord>> {
    let json: Option<String> = redis::cmd("HGET")
        .arg(call_key(stream_id))
        .arg("call")
        .query_async(&mut redis.clone())
        .await?;
    Ok(json.and_then(|json| serde_json::from_str(&json).ok()))
}

/// Makes `me` the owner of the call behind `stream_id` if its owner's lease has lapsed;
/// true when this process now has to finish the call.
pub async fn claim(
    redis: &ConnectionManager,
    stream_id: &str,
    me: Uuid,
) -> redis::RedisResult<bool> {
    let script = redis::Script::new(
        r"local owner = redis.call('HGET', KEYS[1], 'owner')
          if not owner or owner == ARGV[1] then return 0 end
          if redis.call('EXISTS', ARGV[2] .. owner) == 1 then return 0 end
          redis.call('HSET', KEYS[1], 'owner', ARGV[1])
          return 1",
    );
    let claimed: i64 = script
        .key(call_key(stream_id))
        .arg(me.to_string())
        .arg("mcp:instance:")
        .invoke_async(&mut redis.clone())
        .await?;
    Ok(claimed == 1)
}

/// Keeps this process's lease alive until `shutdown`, then gives it up at once.
pub async fn keep_lease(redis: ConnectionManager, me: Uuid, shutdown: CancellationToken) {
    let key = instance_key(me);
    let millis = u64::try_from(LEASE.as_millis()).unwrap_or(u64::MAX);
    loop {
        let renewed: redis::RedisResult<()> = redis::cmd("SET")
            .arg(&key)
            .arg(1)
            .arg("PX")
            .arg(millis)
            .query_async(&mut redis.clone())
            .await;
        if let Err(e) = renewed {
            tracing::warn!(error = %e, "could not renew this process's MCP lease");
        }
        tokio::select! {
            () = tokio::time::sleep(RENEW) => {}
            () = shutdown.cancelled() => break,
        }
    }
    let released: redis::RedisResult<()> = redis::cmd("DEL")
        .arg(&key)
        .query_async(&mut redis.clone())
        .await;
    if let Err(e) = released {
        tracing::debug!(error = %e, "MCP lease not released; it lapses on its own");
    }
}
