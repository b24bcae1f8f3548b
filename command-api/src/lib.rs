//! command-api: accepts commands from agents (start and cancel a task) and publishes them to
//! stream `AXON`. The request path writes nothing but that one publish; it only reads
//! Postgres (keys, idempotency beyond the dedup window, a task's existence). It also signs
//! people in ([`accounts`]: `/auth/*`).
//!
//! Entry points: [`router`] over a [`State`] built by [`State::new`]; [`start_task`] and
//! [`cancel_task`] for other front ends (the MCP server) that authenticate on their own.

pub mod accounts;
mod queues;
pub mod quotas;
mod routes;

pub use routes::tasks::{StartTask, Started, cancel_task, start_task};

use std::sync::Arc;

use async_nats::jetstream::Context;
use async_nats::jetstream::stream::Stream;
use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRef};
use axum::routing::{delete, get, patch, post};
use shared::keys::Keys;
use sqlx::PgPool;

/// The largest request body accepted.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// What the handlers share; a pointer, since axum clones it for every request (cloning the
/// parts themselves was 6 % of the API's CPU, perf, issue 9).
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
    js: Context,
    axon: Stream,
    settings: Arc<Settings>,
    hasher: accounts::passwords::Hasher,
    /// A password hash checked when a login names an unknown email.
    decoy: Arc<str>,
    throttle: accounts::throttle::Throttle,
    /// Password hashes computed at once (one per core).
    hashing: Arc<tokio::sync::Semaphore>,
    /// Tenants whose work-queue consumer exists.
    queues: queues::Queues,
    /// Quotas by plan (none when `LIMITS_ENABLED=false`).
    quotas: Option<quotas::Quotas>,
    /// Sends test deliveries of webhooks.
    webhook_sender: webhooks::send::Sender,
}

/// The parts of configuration command-api uses.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Adapters the operator enabled (`ADAPTERS_ENABLED`).
    pub adapters_enabled: Vec<String>,
    /// The Fly apps fly tasks may use (`FLY_APPS`).
    pub fly_apps: Vec<String>,
    /// Signs resume tokens (`HMAC_SECRET`).
    pub hmac_secret: String,
    /// How long a resume token opens its stream (`RESUME_TOKEN_TTL_S`).
    pub resume_token_ttl: std::time::Duration,
    /// Runs of a task before it fails for lost workers (`TASK_MAX_ATTEMPTS`).
    pub max_attempts: u32,
    /// The timeout of a task started without one (`TASK_DEFAULT_TIMEOUT_S`).
    pub default_timeout_s: u32,
    /// The longest timeout a task may ask (`TASK_MAX_TIMEOUT_S`).
    pub max_timeout_s: u32,
    /// Cheap password hashes, for tests (`PASSWORD_HASH=fast`).
    pub fast_password_hash: bool,
    /// How long a worker keeps a start command unacked (`WORKER_ACK_WAIT_S`): part of the
    /// tenant consumers' config.
    pub ack_wait: std::time::Duration,
    /// Webhook targets and test deliveries.
    pub webhooks: shared::config::WebhookConfig,
}

impl State {
    /// Builds the state from connected backends; `keys` is the process's API key cache
    /// (and its Postgres pool), `axon` is stream `AXON`. Fails if no HTTP client for
    /// webhook tests can be made.
    pub fn new(keys: Keys, js: Context, axon: Stream, settings: Settings) -> Result<Self, String> {
        let hasher = accounts::passwords::Hasher::new(settings.fast_password_hash);
        let webhook_sender = webhooks::send::Sender::new(
            settings.webhooks.allow_private,
            settings.webhooks.timeout,
        )?;
        Ok(Self(Arc::new(Shared {
            pool: keys.pool().clone(),
            keys,
            js,
            axon,
            settings: Arc::new(settings),
            hasher,
            decoy: hasher.decoy().into(),
            throttle: accounts::throttle::Throttle::default(),
            hashing: Arc::new(tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(2, usize::from),
            )),
            queues: queues::Queues::default(),
            quotas: None,
            webhook_sender,
        })))
    }

    /// The same state, checking starts against `quotas`.
    pub fn with_quotas(self, quotas: quotas::Quotas) -> Self {
        Self(Arc::new(Shared {
            quotas: Some(quotas),
            ..(*self.0).clone()
        }))
    }
}

impl FromRef<State> for Keys {
    fn from_ref(state: &State) -> Self {
        state.keys.clone()
    }
}

/// The command routes.
pub fn router(state: State) -> Router {
    Router::new()
        .route("/mcp/start_task", post(routes::tasks::start))
        .route("/mcp/tasks/{id}/cancel", post(routes::tasks::cancel))
        .route("/auth/register", post(routes::auth::register))
        .route("/auth/login", post(routes::auth::login))
        .route("/auth/refresh", post(routes::auth::refresh))
        .route("/auth/logout", post(routes::auth::logout))
        .route(
            "/api/keys",
            get(routes::keys::list).post(routes::keys::create),
        )
        .route("/api/keys/{id}", delete(routes::keys::revoke))
        .route(
            "/api/webhooks",
            get(routes::webhooks::list).post(routes::webhooks::create),
        )
        .route("/api/webhooks/{id}", delete(routes::webhooks::delete))
        .route("/api/webhooks/{id}/test", post(routes::webhooks::test))
        .route(
            "/api/members",
            get(routes::members::list).post(routes::members::add),
        )
        .route(
            "/api/members/{user_id}",
            patch(routes::members::change).delete(routes::members::remove),
        )
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}
