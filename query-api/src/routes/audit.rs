//! The auditor's routes: `GET /mcp/tasks/{id}/receipt`, `GET /mcp/tasks/{id}/verify`,
//! `GET /.well-known/axontask/keys`, `GET /api/log/head`,
//! `GET /api/log/proof/inclusion` and `GET /api/log/proof/consistency`.

use axum::extract::State as Extract;
use axum::http::header;
use axum::response::IntoResponse;
use serde::Deserialize;
use shared::audit::signed::{SignedHead, SignedReceipt};
use shared::audit::verdict::{ConsistencyProof, InclusionProof, Verdict};
use shared::auth::Scope;
use shared::http::{ApiError, Caller, Query, TaskPath};
use shared::ids::TaskId;

use crate::{State, audit};

/// `GET /mcp/tasks/{id}/receipt`.
pub async fn receipt(
    Extract(state): Extract<State>,
    caller: Caller,
    TaskPath(task): TaskPath,
) -> Result<axum::Json<SignedReceipt>, ApiError> {
    let tenant = caller.tenant_for(Scope::TasksRead)?;
    audit::receipt(&state, tenant, task).await.map(axum::Json)
}

/// `GET /mcp/tasks/{id}/verify`.
pub async fn verify(
    Extract(state): Extract<State>,
    caller: Caller,
    TaskPath(task): TaskPath,
) -> Result<axum::Json<Verdict>, ApiError> {
    let tenant = caller.tenant_for(Scope::TasksRead)?;
    audit::verify(&state, tenant, task).await.map(axum::Json)
}

/// `GET /.well-known/axontask/keys`: public, cacheable.
pub async fn keys(Extract(state): Extract<State>) -> Result<impl IntoResponse, ApiError> {
    let jwks = audit::jwks(&state).await?;
    Ok((
        [(header::CACHE_CONTROL, "public, max-age=60")],
        axum::Json(jwks),
    ))
}

/// `GET /api/log/head`.
pub async fn head(
    Extract(state): Extract<State>,
    caller: Caller,
) -> Result<axum::Json<SignedHead>, ApiError> {
    let tenant = caller.tenant_for(Scope::TasksRead)?;
    audit::head(&state, tenant).await.map(axum::Json)
}

/// Query of the inclusion proof.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InclusionQuery {
    task_id: TaskId,
    tree_size: Option<u64>,
}

/// `GET /api/log/proof/inclusion?task_id=…&tree_size=N`.
pub async fn inclusion(
    Extract(state): Extract<State>,
    caller: Caller,
    Query(query): Query<InclusionQuery>,
) -> Result<axum::Json<InclusionProof>, ApiError> {
    let tenant = caller.tenant_for(Scope::TasksRead)?;
    audit::inclusion(&state, tenant, query.task_id, query.tree_size)
        .await
        .map(axum::Json)
}

/// Query of the consistency proof.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsistencyQuery {
    from: u64,
    to: u64,
}

/// `GET /api/log/proof/consistency?from=M&to=N`.
pub async fn consistency(
    Extract(state): Extract<State>,
    caller: Caller,
    Query(query): Query<ConsistencyQuery>,
) -> Result<axum::Json<ConsistencyProof>, ApiError> {
    let tenant = caller.tenant_for(Scope::TasksRead)?;
    audit::consistency(&state, tenant, query.from, query.to)
        .await
        .map(axum::Json)
}
