//! `axontask serve`: connects the backends, builds the selected roles, serves HTTP, and
//! shuts down gracefully on SIGINT/SIGTERM or when any role stops.

use std::time::Duration;

use anyhow::{Context, bail};
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use shared::config::Config;
use sqlx::postgres::PgPoolOptions;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cli::Role;
use crate::health::{self, Backends};

/// How long running work may take to stop after a shutdown signal.
const DRAIN: Duration = Duration::from_secs(20);

/// Runs `roles` until a signal or a role's end. Only the backends the roles use are
/// connected: a worker alone needs NATS only, and no Postgres or Redis credentials.
pub async fn run(config: Config, roles: &[Role], metrics: PrometheusHandle) -> anyhow::Result<()> {
    let (nats, js) = shared::nats::connect(&config.nats_url, "axontask").await?;
    let streams = shared::nats::ensure_streams(&js, config.streams).await?;
    let needs_postgres = roles.iter().any(|r| *r != Role::Worker);
    let needs_redis = roles
        .iter()
        .any(|r| !matches!(r, Role::Worker | Role::Webhooks));
    let pool = match (needs_postgres, &config.database_url) {
        (false, _) => None,
        (true, None) => {
            bail!("DATABASE_URL is not set; every role but worker needs it (see .env.example)")
        }
        (true, Some(url)) => Some(
            PgPoolOptions::new()
                .max_connections(32)
                .acquire_timeout(Duration::from_secs(5))
                .connect(url)
                .await
                .context("connecting to DATABASE_URL")?,
        ),
    };
    let redis = match (needs_redis, &config.redis_url) {
        (false, _) => None,
        (true, None) => {
            bail!(
                "REDIS_URL is not set; every role but worker and webhooks needs it (see .env.example)"
            )
        }
        (true, Some(url)) => {
            let client = redis::Client::open(url.as_str()).context("REDIS_URL")?;
            // Reconnects on its own after Redis restarts, retrying at least once a second.
            let config =
                redis::aio::ConnectionManagerConfig::new().set_max_delay(Duration::from_secs(1));
            let manager = redis::aio::ConnectionManager::new_with_config(client.clone(), config)
                .await
                .context("connecting to REDIS_URL")?;
            Some((client, manager))
        }
    };

    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let faults = shared::faults::Faults::default();
    let backends = Backends {
        pool: pool.clone(),
        redis: redis.as_ref().map(|(_, manager)| manager.clone()),
        nats: nats.clone(),
        metrics,
        faults: faults.clone(),
    };
    if let Some(address) = config.metrics_addr {
        let listener = TcpListener::bind(address)
            .await
            .with_context(|| format!("binding {address} (METRICS_ADDR; `off` for none)"))?;
        let metrics = health::metrics_router(backends.clone());
        let token = shutdown.clone();
        tracker.spawn(async move {
            let served = axum::serve(listener, metrics)
                .with_graceful_shutdown(token.cancelled_owned())
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "metrics server stopped");
            }
        });
    }
    let mut app = Router::new().merge(health::router(backends));
    // One API key cache per process, kept current while the process serves keys.
    let serves_api = roles
        .iter()
        .any(|r| matches!(r, Role::CommandApi | Role::QueryApi | Role::Mcp));
    let tokens = match (&config.auth.jwt_secret, serves_api) {
        (Some(secret), _) => Some(shared::tokens::Tokens::new(
            secret,
            config.auth.access_ttl,
            config.auth.refresh_ttl,
        )),
        (None, true) => bail!(
            "JWT_SECRET is not set; the API roles sign people in with it (openssl rand -hex 32; see .env.example)"
        ),
        (None, false) => None,
    };
    if config.auth.fast_password_hash && serves_api {
        tracing::warn!(
            "PASSWORD_HASH=fast: passwords are hashed cheaply (for tests); never use it in production"
        );
    }
    let keys = pool.clone().map(|pool| {
        let keys = shared::keys::Keys::new(pool);
        match tokens {
            Some(tokens) => keys.with_tokens(tokens),
            None => keys,
        }
    });
    if let Some(keys) = &keys
        && serves_api
    {
        tracker.spawn(keys.clone().follow(shutdown.child_token()));
    }
    let plans = keys
        .as_ref()
        .map(|keys| shared::plans::Plans::new(keys.pool().clone()));
    let limits_on = serves_api && config.limits.enabled;
    let commands = || -> anyhow::Result<command_api::State> {
        let state = command_api::State::new(
            given(&keys, "DATABASE_URL")?,
            js.clone(),
            streams.axon.clone(),
            command_api::Settings {
                adapters_enabled: config.adapters_enabled.clone(),
                fly_apps: config.worker.fly.apps.clone(),
                hmac_secret: config.hmac_secret.clone(),
                resume_token_ttl: config.resume_token_ttl,
                max_attempts: config.worker.max_attempts,
                default_timeout_s: config.default_timeout_s,
                max_timeout_s: config.max_timeout_s,
                fast_password_hash: config.auth.fast_password_hash,
                ack_wait: config.worker.ack_wait,
                webhooks: config.webhooks.clone(),
            },
        )
        .map_err(anyhow::Error::msg)?;
        if !limits_on {
            return Ok(state);
        }
        let quotas = command_api::quotas::Quotas::new(
            given(&plans, "DATABASE_URL")?,
            given(&redis, "REDIS_URL")?.1,
            config.limits.clone(),
        );
        Ok(state.with_quotas(quotas))
    };
    // One query-api state (and one Redis fan-in hub) serves both the HTTP reads and MCP.
    let query_state = std::cell::OnceCell::<query_api::State>::new();
    let queries = || -> anyhow::Result<query_api::State> {
        if let Some(state) = query_state.get() {
            return Ok(state.clone());
        }
        let (client, manager) = given(&redis, "REDIS_URL")?;
        let hub = query_api::hub::Hub::new(manager.clone());
        tracker.spawn(hub.clone().run(client, shutdown.child_token()));
        let state = query_api::State::new(
            given(&keys, "DATABASE_URL")?,
            streams.axon.clone(),
            manager,
            hub,
            &config.hmac_secret,
            config.sse_max_streams_per_tenant,
            shutdown.child_token(),
            config.receipts.verify_keys.clone(),
        );
        tracker.spawn(
            state
                .usage()
                .flush_every_second(given(&pool, "DATABASE_URL")?, shutdown.child_token()),
        );
        let state = match &plans {
            Some(plans) if limits_on => state.with_limits(plans.clone(), config.limits.clone()),
            _ => state,
        };
        Ok(query_state.get_or_init(|| state).clone())
    };
    for role in roles {
        let token = shutdown.clone();
        match role {
            Role::CommandApi => app = app.merge(command_api::router(commands()?)),
            Role::QueryApi => app = app.merge(query_api::router(queries()?)),
            Role::Mcp => {
                let settings = mcp::Settings {
                    allowed_origins: config.mcp.allowed_origins.clone(),
                    allowed_hosts: config.mcp.allowed_hosts.clone(),
                    fixtures: config.mcp.fixtures,
                };
                let backend = mcp::Backend::new(
                    commands()?,
                    queries()?,
                    given(&keys, "DATABASE_URL")?,
                    given(&redis, "REDIS_URL")?.1,
                    settings,
                );
                let (router, lease) = mcp::endpoint(backend, token.child_token());
                tracker.spawn(lease);
                app = app.merge(router);
            }
            Role::Worker => {
                let settings = worker::Settings {
                    worker_id: worker_id(),
                    adapters_enabled: config.adapters_enabled.clone(),
                    tuning: config.worker.clone(),
                };
                let worker = worker::Worker::create(
                    nats.clone(),
                    js.clone(),
                    streams.axon.clone(),
                    settings,
                )
                .await?;
                tracker.spawn(async move {
                    worker.run(token.clone()).await;
                    token.cancel();
                });
            }
            Role::Webhooks => {
                let webhooks = webhooks::Webhooks::create(
                    given(&pool, "DATABASE_URL")?,
                    streams.log.clone(),
                    config.webhooks.clone(),
                )
                .await
                .map_err(|e| anyhow::anyhow!("starting webhook deliveries: {e}"))?;
                tracker.spawn(async move {
                    webhooks.run(token.clone()).await;
                    token.cancel();
                });
            }
            Role::Projector => {
                let projector = projector::Projector::create(
                    given(&pool, "DATABASE_URL")?,
                    js.clone(),
                    streams.axon.clone(),
                    given(&redis, "REDIS_URL")?.1,
                    faults.clone(),
                    config.receipts.signer()?,
                );
                tracker.spawn(async move {
                    projector.run(token.clone()).await;
                    token.cancel();
                });
            }
        }
    }
    if limits_on {
        let limits = crate::limits::RateLimits {
            keys: given(&keys, "DATABASE_URL")?,
            plans: given(&plans, "DATABASE_URL")?,
            limiter: shared::ratelimit::Limiter::new(given(&redis, "REDIS_URL")?.1),
            config: config.limits.clone(),
        };
        app = app.layer(axum::middleware::from_fn_with_state(
            limits,
            crate::limits::limit,
        ));
    }
    let app = app
        .fallback(shared::http::route_not_found)
        .method_not_allowed_fallback(shared::http::method_not_allowed);
    let app = crate::headers::wrap(app, &config.http.cors_origins);

    let listener = TcpListener::bind((config.api_host, config.api_port))
        .await
        .with_context(|| {
            format!(
                "binding {}:{} (API_HOST, API_PORT)",
                config.api_host, config.api_port
            )
        })?;
    tracing::info!(address = %listener.local_addr()?, ?roles, "serving");
    let server_token = shutdown.clone();
    let limits = crate::http_server::Limits {
        header_read_timeout: config.http.header_read_timeout,
        max_connections: config.http.max_connections,
    };
    tracker.spawn(async move {
        crate::http_server::serve(listener, app, limits, server_token.clone()).await;
        server_token.cancel();
    });

    let mut terminate = signal(SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
        _ = terminate.recv() => tracing::info!("SIGTERM: shutting down"),
        () = shutdown.cancelled() => tracing::warn!("a role stopped: shutting down"),
    }
    shutdown.cancel();
    tracker.close();
    if tokio::time::timeout(DRAIN, tracker.wait()).await.is_err() {
        tracing::warn!("some work did not stop within {DRAIN:?}");
    }
    Ok(())
}

/// A backend connection the roles need (connected above for exactly those roles).
fn given<T: Clone>(backend: &Option<T>, var: &str) -> anyhow::Result<T> {
    backend
        .clone()
        .with_context(|| format!("{var} is not connected, yet a role needs it"))
}

/// `hostname:pid`, naming this worker in `started` events.
fn worker_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "worker".into());
    format!("{host}:{}", std::process::id())
}
