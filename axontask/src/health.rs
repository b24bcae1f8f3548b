//! `/healthz` and `/readyz`, served by every process on its `API_PORT`, and `/metrics`,
//! served apart on `METRICS_ADDR` (loopback by default: not for the public).

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;
use shared::faults::Faults;
use shared::http::ApiError;
use sqlx::PgPool;

/// The backends a process checks for readiness.
#[derive(Clone)]
pub struct Backends {
    /// Postgres, if the roles use it.
    pub pool: Option<PgPool>,
    /// Redis, if the roles use it.
    pub redis: Option<redis::aio::ConnectionManager>,
    /// NATS.
    pub nats: async_nats::Client,
    /// Renders the metrics.
    pub metrics: PrometheusHandle,
    /// Faults the roles raised for the operator.
    pub faults: Faults,
}

/// The health routes.
pub fn router(backends: Backends) -> Router {
    Router::new()
        .route(
            "/healthz",
            get(|| async { axum::Json(json!({"status": "ok"})) }),
        )
        .route("/readyz", get(ready))
        .with_state(backends)
}

/// The metrics route, for the `METRICS_ADDR` listener.
pub fn metrics_router(backends: Backends) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(backends)
}

async fn ready(State(b): State<Backends>) -> Result<axum::Json<serde_json::Value>, ApiError> {
    if let Some((component, message)) = b.faults.first() {
        tracing::debug!(component, "not ready");
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "operator_action_needed",
            format!("{component}: {message}"),
        ));
    }
    if let Some(pool) = &b.pool {
        sqlx::query("SELECT 1")
            .execute(pool)
            .await
            .map_err(|e| ApiError::unavailable("postgres", e))?;
    }
    if let Some(redis) = &b.redis {
        redis::cmd("PING")
            .query_async::<()>(&mut redis.clone())
            .await
            .map_err(|e| ApiError::unavailable("redis", e))?;
    }
    if b.nats.connection_state() != async_nats::connection::State::Connected {
        return Err(ApiError::unavailable("nats", "not connected"));
    }
    Ok(axum::Json(json!({"status": "ready"})))
}

async fn metrics(State(b): State<Backends>) -> Response {
    if let Some(pool) = &b.pool {
        count_tasks(pool).await;
    }
    (
        StatusCode::OK,
        [("content-type", "text/plain; version=0.0.4")],
        b.metrics.render(),
    )
        .into_response()
}

/// Sets the `axon_tasks` gauges from the read model.
async fn count_tasks(pool: &PgPool) {
    let counts: Result<Vec<(String, i64)>, _> =
        sqlx::query_as("SELECT state, count(*) FROM tasks GROUP BY state")
            .fetch_all(pool)
            .await;
    match counts {
        Ok(counts) => {
            for state in [
                "pending",
                "running",
                "succeeded",
                "failed",
                "timeout",
                "canceled",
            ] {
                let n = counts
                    .iter()
                    .find(|(s, _)| s == state)
                    .map_or(0, |(_, n)| *n);
                metrics::gauge!("axon_tasks", "state" => state).set(n as f64);
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot count tasks by state for /metrics"),
    }
}
