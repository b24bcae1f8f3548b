//! mcp: the MCP server (§3.9) at `/mcp`, on the official SDK `rmcp` over Streamable HTTP.
//! It serves protocol revision 2025-11-25 (sessions, the GET stream, `Last-Event-ID`
//! resumability) and 2026-07-28 (stateless requests, the tasks extension) on one endpoint.
//!
//! It owns no task logic: tools call `command-api` and `query-api` as libraries, and every
//! answer comes from their stores, so any process answers for any task after any restart.
//! Sessions and resumable streams live in Redis ([`store`]), not in process memory.
//! Nothing depends on this crate.
//!
//! Entry points: [`Backend::new`] and [`endpoint`].

mod auth;
mod body;
mod calls;
mod describe;
mod fixtures;
mod resources;
mod server;
mod sessions;
mod store;
mod takeover;
mod tasks;
mod tools;
mod watch;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use redis::aio::ConnectionManager;
use rmcp::task_manager::TaskManager;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use shared::keys::Keys;
use tokio_util::sync::CancellationToken;

use uuid::Uuid;

use crate::server::AxonServer;
use crate::sessions::{Closers, DurableSessions};
use crate::store::{RedisEventStore, RedisSessionStore};
use crate::takeover::Finisher;

/// The parts of configuration the MCP server uses.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `MCP_ALLOWED_ORIGINS`: browser origins allowed to call `/mcp`; a request with any
    /// other `Origin` is refused (requests without `Origin` are allowed).
    pub allowed_origins: Vec<String>,
    /// `MCP_ALLOWED_HOSTS`: `Host` values accepted (DNS-rebinding protection).
    pub allowed_hosts: Vec<String>,
    /// `MCP_CONFORMANCE_FIXTURES`: also serve the fixture tools and resources of the MCP
    /// conformance suite (tests only).
    pub fixtures: bool,
}

/// What every MCP handler shares: the command and query services and the stores.
#[derive(Clone)]
pub struct Backend {
    commands: command_api::State,
    queries: query_api::State,
    keys: Keys,
    redis: ConnectionManager,
    settings: Arc<Settings>,
    /// The conformance fixtures' tasks (in process; AxonTask's own tasks are in the stores).
    fixture_tasks: Arc<TaskManager>,
    /// Ends a call's response stream early.
    closers: Arc<Closers>,
}

impl Backend {
    /// Builds the backend from the command and query services it composes.
    pub fn new(
        commands: command_api::State,
        queries: query_api::State,
        keys: Keys,
        redis: ConnectionManager,
        settings: Settings,
    ) -> Self {
        Self {
            commands,
            queries,
            keys,
            redis,
            settings: Arc::new(settings),
            fixture_tasks: Arc::default(),
            closers: Arc::default(),
        }
    }
}

/// How long an idle SSE stream waits between keep-alive comments.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The `/mcp` route (API-key authentication in front of the Streamable HTTP service) and
/// the lease task to spawn beside it, which tells other processes this one is alive to
/// finish the calls it runs. `shutdown` ends every open session and stream.
pub fn endpoint(
    backend: Backend,
    shutdown: CancellationToken,
) -> (Router, impl Future<Output = ()> + Send + 'static) {
    let me = Uuid::now_v7();
    let finisher = Finisher::new(backend.clone(), backend.redis.clone(), shutdown.clone());
    let events = RedisEventStore::new(backend.redis.clone(), me, Arc::new(finisher));
    let sessions = DurableSessions::new(
        LocalSessionManager::default().with_event_store(Arc::new(events)),
        backend.redis.clone(),
        me,
        backend.closers.clone(),
    );
    let mut config = StreamableHttpServerConfig::default()
        .with_allowed_hosts(backend.settings.allowed_hosts.clone())
        .with_allowed_origins(backend.settings.allowed_origins.clone())
        .enforce_origin_validation()
        .with_sse_keep_alive(Some(KEEP_ALIVE))
        .with_max_request_body_bytes(command_api::MAX_BODY_BYTES)
        .with_cancellation_token(shutdown.clone());
    config.session_store = Some(Arc::new(RedisSessionStore::new(backend.redis.clone())));
    let factory_backend = backend.clone();
    let service = StreamableHttpService::new(
        move || Ok(AxonServer::new(factory_backend.clone())),
        Arc::new(sessions),
        config,
    );
    let lease = store::calls::keep_lease(backend.redis.clone(), me, shutdown);
    let router = Router::new()
        .route_service("/mcp", service)
        .layer(axum::middleware::from_fn(body::single_message))
        .layer(axum::middleware::from_fn_with_state(
            backend,
            auth::require_key,
        ));
    (router, lease)
}
