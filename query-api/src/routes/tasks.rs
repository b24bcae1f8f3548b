//! `GET /mcp/tasks/{id}/status`, `GET /mcp/tasks`, `GET /mcp/tasks/{id}/events`.

use axum::body::Body;
use axum::extract::State as Extract;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shared::auth::Scope;
use shared::events::wire::Envelope;
use shared::http::{ApiError, Caller, Query, TaskPath};
use shared::task::TaskState;
use uuid::Uuid;

use crate::State;
use crate::status::{self, TaskStatus};

/// Most tasks or events in one page.
const MAX_LIMIT: usize = 1000;
/// Tasks per page when `limit` is not given.
const DEFAULT_TASKS: usize = 50;

/// `GET /mcp/tasks/{id}/status`.
pub async fn status(
    Extract(state): Extract<State>,
    caller: Caller,
    TaskPath(task): TaskPath,
) -> Result<axum::Json<TaskStatus>, ApiError> {
    let tenant = caller.tenant_for(Scope::TasksRead)?;
    status::find(&state.pool, &state.axon, tenant, task)
        .await
        .map(axum::Json)
}

/// Query of the list route.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    state: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
}

/// A page of tasks.
#[derive(Debug, Serialize)]
pub struct TaskPage {
    tasks: Vec<TaskStatus>,
    next_cursor: Option<String>,
}

/// `GET /mcp/tasks?state=&limit=&cursor=`: the tenant's tasks, newest first.
pub async fn list(
    Extract(state): Extract<State>,
    caller: Caller,
    Query(query): Query<ListQuery>,
) -> Result<axum::Json<TaskPage>, ApiError> {
    let tenant = caller.tenant_for(Scope::TasksRead)?;
    let limit = limit(query.limit, DEFAULT_TASKS)?;
    if query
        .state
        .as_deref()
        .is_some_and(|s| TaskState::parse(s).is_none())
    {
        return Err(ApiError::bad_request(
            "invalid_state",
            "state must be one of pending, running, succeeded, failed, timeout, canceled",
        ));
    }
    let (before_at, before_id) = match &query.cursor {
        Some(cursor) => decode_cursor(cursor).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_cursor",
                "cursor must be a next_cursor from a previous page",
            )
        })?,
        None => (None, None),
    };
    let rows = sqlx::query(concat!(
        "SELECT ",
        crate::status_columns!(),
        " FROM tasks WHERE tenant_id = $1 AND ($2::text IS NULL OR state = $2)
           AND ($3::timestamptz IS NULL OR (created_at, task_id) < ($3, $4))
         ORDER BY created_at DESC, task_id DESC LIMIT $5"
    ))
    .bind(tenant.0)
    .bind(&query.state)
    .bind(before_at)
    .bind(before_id)
    .bind(i64::try_from(limit + 1).unwrap_or(i64::MAX))
    .fetch_all(&state.pool)
    .await
    .map_err(|e| ApiError::unavailable("postgres", e))?;
    let mut tasks = rows
        .iter()
        .map(status::from_row)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ApiError::unavailable("postgres", e))?;
    let next_cursor = if tasks.len() > limit {
        tasks.truncate(limit);
        tasks.last().map(encode_cursor)
    } else {
        None
    };
    Ok(axum::Json(TaskPage { tasks, next_cursor }))
}

fn limit(asked: Option<usize>, default: usize) -> Result<usize, ApiError> {
    match asked {
        None => Ok(default),
        Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        Some(_) => Err(ApiError::bad_request(
            "invalid_limit",
            format!("limit must be between 1 and {MAX_LIMIT}"),
        )),
    }
}

fn encode_cursor(last: &TaskStatus) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}|{}", last.created_at, last.task_id))
}

fn decode_cursor(cursor: &str) -> Option<(Option<DateTime<Utc>>, Option<Uuid>)> {
    let text = String::from_utf8(URL_SAFE_NO_PAD.decode(cursor).ok()?).ok()?;
    let (at, id) = text.split_once('|')?;
    Some((Some(shared::time::parse_ts(at)?), Some(id.parse().ok()?)))
}

/// Query of the events route.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    since_seq: Option<u64>,
    limit: Option<usize>,
}

/// A page of events; pass `next_seq` as `since_seq` for the next page.
#[derive(Debug, Serialize)]
pub struct EventPage {
    events: Vec<Envelope>,
    next_seq: u64,
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
    status::find(&state.pool, &state.axon, tenant, task).await?;
    let since = query.since_seq.unwrap_or(0);
    let ndjson = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/x-ndjson"));
    if ndjson {
        let log = state.log.clone();
        let lines = futures::stream::unfold(Some(since), move |after| {
            let log = log.clone();
            async move {
                let after = after?;
                match log.read_postgres(tenant, task, after, MAX_LIMIT).await {
                    Ok(page) if page.is_empty() => None,
                    Ok(page) => {
                        let next = page.last().map(|e| e.seq);
                        let mut text = String::new();
                        for event in &page {
                            text.push_str(
                                &serde_json::to_string(event).expect("envelopes serialize"),
                            );
                            text.push('\n');
                        }
                        Some((Ok::<_, std::io::Error>(text), next))
                    }
                    Err(e) => Some((Err(std::io::Error::other(e.to_string())), None)),
                }
            }
        });
        return Ok((
            [(header::CONTENT_TYPE, "application/x-ndjson")],
            Body::from_stream(lines),
        )
            .into_response());
    }
    let limit = limit(query.limit, MAX_LIMIT)?;
    let events = state
        .log
        .read_postgres(tenant, task, since, limit)
        .await
        .map_err(|e| ApiError::unavailable("postgres", e))?;
    let next_seq = events.last().map_or(since, |e| e.seq);
    Ok(axum::Json(EventPage { events, next_seq }).into_response())
}
