//! query-api: answers reads — status, lists, event pages and NDJSON export — from Postgres,
//! and streams events over SSE from Redis through one fan-out [`hub::Hub`] per process,
//! falling back to Postgres for any range Redis lacks. It never writes.
//!
//! Entry points: [`State::new`], [`router`], and [`hub::Hub::run`] (spawn it once); for
//! other front ends (the MCP server), [`reads`] and [`State::follow`].

pub mod audit;
pub mod follow;
pub mod hub;
pub mod log;
pub mod reads;
mod routes;
pub mod status;
pub mod streams;
pub mod usage;

use std::sync::Arc;

use async_nats::jetstream::stream::Stream;
use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRef};
use axum::routing::{get, post};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use shared::ids::{TaskId, TenantId};
use shared::keys::Keys;

use crate::follow::Follower;
use crate::hub::Hub;
use crate::log::LogReader;

/// What the handlers share; a pointer, since axum clones it for every request and every
/// SSE stream holds one.
#[derive(Clone)]
pub struct State(Arc<Shared>);

impl std::ops::Deref for State {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The parts of [`State`].
#[derive(Clone)]
pub struct Shared {
    pool: PgPool,
    keys: Keys,
    axon: Stream,
    log: LogReader,
    hub: Hub,
    hmac_secret: Arc<str>,
    /// Open SSE streams per tenant.
    streams: streams::OpenStreams,
    /// Ends every open SSE stream (on SIGTERM: clients resume elsewhere).
    shutdown: CancellationToken,
    /// The keys receipts and heads verify with.
    receipt_keys: audit::PublishedKeys,
    /// Verdicts computed at once ([`audit::VERIFICATIONS`] at most).
    verifications: Arc<tokio::sync::Semaphore>,
    /// Stream usage not yet written.
    usage: usage::Usage,
    /// Plans and their SSE quota (none when `LIMITS_ENABLED=false`).
    limits: Option<(shared::plans::Plans, shared::plans::LimitsConfig)>,
}

impl State {
    /// Builds the state; `keys` is the process's API key cache (and its Postgres pool),
    /// `axon` is stream `AXON`, `redis` a shared multiplexed connection;
    /// a tenant may have `max_streams` SSE streams open at once; `shutdown` ends every
    /// open SSE stream at once; `retired_keys` are published beside the keys that signed.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        keys: Keys,
        axon: Stream,
        redis: redis::aio::ConnectionManager,
        hub: Hub,
        hmac_secret: &str,
        max_streams: usize,
        shutdown: CancellationToken,
        retired_keys: Vec<shared::audit::signer::PublicKey>,
    ) -> Self {
        Self(Arc::new(Shared {
            receipt_keys: audit::PublishedKeys::new(retired_keys),
            verifications: Arc::new(tokio::sync::Semaphore::new(audit::VERIFICATIONS)),
            log: LogReader::new(keys.pool().clone(), redis),
            pool: keys.pool().clone(),
            keys,
            axon,
            hub,
            hmac_secret: hmac_secret.into(),
            streams: streams::OpenStreams::new(max_streams),
            shutdown,
            usage: usage::Usage::default(),
            limits: None,
        }))
    }

    /// The same state, holding each tenant to its plan's SSE streams.
    pub fn with_limits(
        self,
        plans: shared::plans::Plans,
        config: shared::plans::LimitsConfig,
    ) -> Self {
        Self(Arc::new(Shared {
            limits: Some((plans, config)),
            ..(*self.0).clone()
        }))
    }

    /// Stream usage, to be written by [`usage::Usage::flush_every_second`] (spawn it once).
    pub fn usage(&self) -> usage::Usage {
        self.usage.clone()
    }
}

impl State {
    /// Follows `tenant`'s `task` from after `from`: subscribes to the hub before reading
    /// anything, so no event falls between backfill and live tail. `from` must not be past
    /// the task's last event ([`reads::check_position`]).
    pub fn follow(&self, tenant: TenantId, task: TaskId, from: u64) -> Follower {
        let subscription = self.hub.subscribe(task);
        Follower::new(self.clone(), tenant, task, from, subscription)
    }
}

impl FromRef<State> for Keys {
    fn from_ref(state: &State) -> Self {
        state.keys.clone()
    }
}

/// The read routes.
pub fn router(state: State) -> Router {
    Router::new()
        .route("/mcp/tasks", get(routes::tasks::list))
        .route("/mcp/tasks/{id}/status", get(routes::tasks::status))
        .route("/mcp/tasks/{id}/events", get(routes::tasks::events))
        .route("/mcp/tasks/{id}/stream", get(routes::stream::stream))
        .route("/mcp/tasks/{id}/resume", post(routes::stream::resume))
        .route("/mcp/tasks/{id}/receipt", get(routes::audit::receipt))
        .route("/mcp/tasks/{id}/verify", get(routes::audit::verify))
        .route("/.well-known/axontask/keys", get(routes::audit::keys))
        .route("/api/log/head", get(routes::audit::head))
        .route("/api/usage", get(routes::usage::usage))
        .route("/api/log/proof/inclusion", get(routes::audit::inclusion))
        .route(
            "/api/log/proof/consistency",
            get(routes::audit::consistency),
        )
        .layer(DefaultBodyLimit::max(64 * 1024))
        .with_state(state)
}
