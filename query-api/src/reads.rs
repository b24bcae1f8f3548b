//! Reads shared by every front end (HTTP routes, the MCP server): a page of the tenant's
//! tasks, a page of one task's events. Callers authenticate; these only read, always
//! filtered by the tenant.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shared::events::EventKind;
use shared::events::wire::Envelope;
use shared::http::ApiError;
use shared::ids::{TaskId, TenantId};
use shared::task::TaskState;
use uuid::Uuid;

use crate::State;
use crate::status::{self, TaskStatus};

/// Most tasks or events in one page.
pub const MAX_LIMIT: usize = 1000;
/// Tasks per page when `limit` is not given.
pub const DEFAULT_TASKS: usize = 50;

/// Which tasks to list.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only tasks in this state.
    pub state: Option<String>,
    /// At most this many (1 to [`MAX_LIMIT`], default [`DEFAULT_TASKS`]).
    pub limit: Option<usize>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// A page of tasks.
#[derive(Debug, Serialize)]
pub struct TaskPage {
    /// Newest first.
    pub tasks: Vec<TaskStatus>,
    /// Pass as `cursor` for the next page; absent on the last.
    pub next_cursor: Option<String>,
}

/// A page of events; pass `next_seq` as `since_seq` for the next page.
#[derive(Debug, Serialize)]
pub struct EventPage {
    /// In `seq` order.
    pub events: Vec<Envelope>,
    /// The last `seq` in the page (or `since_seq` when it is empty).
    pub next_seq: u64,
}

/// The tenant's task, or 404 (also for another tenant's task).
pub async fn status(state: &State, tenant: TenantId, task: TaskId) -> Result<TaskStatus, ApiError> {
    status::find(&state.pool, &state.axon, tenant, task).await
}

/// Refuses a read position past the task's last event: a client resumes from a seq it
/// received (or 0), and a position beyond the log would wait for events that are not the
/// ones it asked for (and, in the live hub, hold back every other client of the task).
pub fn check_position(status: &TaskStatus, from: u64) -> Result<(), ApiError> {
    if from > status.last_seq {
        return Err(ApiError::bad_request(
            "position_past_end",
            format!(
                "seq {from} is past the task's last event (seq {}); resume from a seq you received, or from 0 for the whole log",
                status.last_seq
            ),
        ));
    }
    Ok(())
}

/// A page of the tenant's tasks, newest first.
pub async fn list(
    state: &State,
    tenant: TenantId,
    query: &ListQuery,
) -> Result<TaskPage, ApiError> {
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
    Ok(TaskPage { tasks, next_cursor })
}

/// Up to `limit` (1 to [`MAX_LIMIT`], default all of a page) of the task's events after
/// `since`, from Postgres, the log of record; 404 for an unknown or another tenant's task.
pub async fn events(
    state: &State,
    tenant: TenantId,
    task: TaskId,
    since: u64,
    limit: Option<usize>,
) -> Result<EventPage, ApiError> {
    let limit = self::limit(limit, MAX_LIMIT)?;
    status(state, tenant, task).await?;
    page(state, tenant, task, since, limit).await
}

/// Up to `limit` of the task's events after `since`, from Postgres, for a caller that
/// already found the task (with [`status`]).
pub async fn page(
    state: &State,
    tenant: TenantId,
    task: TaskId,
    since: u64,
    limit: usize,
) -> Result<EventPage, ApiError> {
    let events = state
        .log
        .read_postgres(tenant, task, since, limit)
        .await
        .map_err(|e| ApiError::unavailable("postgres", e))?;
    let next_seq = events.last().map_or(since, |e| e.seq);
    Ok(EventPage { events, next_seq })
}

/// Checks a page size.
pub fn limit(asked: Option<usize>, default: usize) -> Result<usize, ApiError> {
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

/// Every event of a task after `since`, as NDJSON chunks (one page of lines each), read
/// from Postgres; the caller has checked the task is the tenant's.
pub fn ndjson(
    state: &State,
    tenant: TenantId,
    task: TaskId,
    since: u64,
) -> impl futures::Stream<Item = Result<String, std::io::Error>> + Send + 'static {
    let log = state.log.clone();
    futures::stream::unfold(Some(since), move |after| {
        let log = log.clone();
        async move {
            let after = after?;
            match log.read_postgres(tenant, task, after, MAX_LIMIT).await {
                Ok(page) if page.is_empty() => None,
                Ok(page) => {
                    let next = page.last().map(|e| e.seq);
                    let mut text = String::new();
                    for event in &page {
                        text.push_str(&serde_json::to_string(event).expect("envelopes serialize"));
                        text.push('\n');
                    }
                    Some((Ok(text), next))
                }
                Err(e) => Some((Err(std::io::Error::other(e.to_string())), None)),
            }
        }
    })
}

/// The task's latest events of the given kinds, newest first (at most `limit`).
pub async fn latest(
    state: &State,
    tenant: TenantId,
    task: TaskId,
    kinds: &[EventKind],
    limit: usize,
) -> Result<Vec<Envelope>, ApiError> {
    let kinds: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
    let rows = sqlx::query(
        "SELECT task_id, tenant_id, seq, ts, kind, payload, hash_prev, hash_curr FROM task_events
         WHERE tenant_id = $1 AND task_id = $2 AND kind = ANY($3) ORDER BY seq DESC LIMIT $4",
    )
    .bind(tenant.0)
    .bind(task.0)
    .bind(&kinds)
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .fetch_all(&state.pool)
    .await
    .map_err(|e| ApiError::unavailable("postgres", e))?;
    rows.iter()
        .map(shared::db::envelope_from_row)
        .collect::<Result<_, _>>()
        .map_err(|e| ApiError::unavailable("postgres", e))
}
