//! `GET /mcp/tasks/{id}/status`, `GET /mcp/tasks`, `GET /mcp/tasks/{id}/events`.

use axum::body::Body;
use axum::extract::State as Extract;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use shared::auth::Scope;
use shared::http::{ApiError, Caller, Query, TaskPath};

use crate::State;
use crate::reads::{self, ListQuery, TaskPage};
use crate::status::TaskStatus;

/// `GET /mcp/tasks/{id}/status`.
pub async fn status(
    Extract(state): Extract<State>,
    caller: Caller,
    TaskPath(task): TaskPath,
) -> Result<axum::Json<TaskStatus>, ApiError> {
    let tenant = caller.tenant_for(Scope::TasksRead)?;
    reads::status(&state, tenant, task).await.map(axum::Json)
}

/// `GET /mcp/tasks?state=&limit=&cursor=`: the tenant's tasks, newest first.
pub async fn list(
    Extract(state): Extract<State>,
    caller: Caller,
    Query(query): Query<ListQuery>,
) -> Result<axum::Json<TaskPage>, ApiError> {
    let tenant = caller.tenant_for(Scope::TasksRead)?;
    reads::list(&state, tenant, &query).await.map(axum::Json)
}

/// Query of the events route.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    since_seq: Option<u64>,
    limit: Option<usize>,
}

/// `GET /mcp/tasks/{id}/events?since_seq=&limit=`: a page of JSON, or with
/// `Accept: application/x-ndjson` every event after `since_seq`, one per line.
pub async fn events(
    Extract(state): Extract<State>,
    caller: Caller,
    TaskPath(task): TaskPath,
    Query(query): Query<EventsQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let tenant = caller.tenant_for(Scope::TasksRead)?;
    let since = query.since_seq.unwrap_or(0);
    let ndjson = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/x-ndjson"));
    if ndjson {
        reads::status(&state, tenant, task).await?;
        let lines = reads::ndjson(&state, tenant, task, since);
        return Ok((
            [(header::CONTENT_TYPE, "application/x-ndjson")],
            Body::from_stream(lines),
        )
            .into_response());
    }
    let page = reads::events(&state, tenant, task, since, query.limit).await?;
    Ok(axum::Json(page).into_response())
}
