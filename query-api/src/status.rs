//! A task's status: from the read model, or — before the projector has reached the task —
//! from its start command in stream `AXON` (read-your-writes: never a 404 after start).

use async_nats::jetstream::stream::Stream;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use shared::events::wire::StartCommand;
use shared::http::ApiError;
use shared::ids::{TaskId, TenantId};
use shared::names;
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};

/// The status object of §3.7.
#[derive(Debug, Clone, Serialize)]
pub struct TaskStatus {
    /// The task.
    pub task_id: TaskId,
    /// The client's name for it.
    pub name: String,
    /// The adapter running it.
    pub adapter: String,
    /// pending, running, succeeded, failed, timeout or canceled.
    pub state: String,
    /// When it was requested.
    pub created_at: String,
    /// When its first attempt started.
    pub started_at: Option<String>,
    /// When it ended.
    pub ended_at: Option<String>,
    /// The last logged `seq` (0 before the first is logged).
    pub last_seq: u64,
    /// The current attempt (0 before the first start).
    pub attempt: u32,
    /// Its timeout, if any.
    pub timeout_s: Option<u32>,
    /// Whether a cancel was requested.
    pub cancel_requested: bool,
    /// The terminal event's payload (`result`, or `error` and `exit_code`), once ended.
    pub outcome: Option<Value>,
}

/// The `tasks` columns [`from_row`] reads, for `concat!` into queries.
#[macro_export]
macro_rules! status_columns {
    () => {
        "task_id, name, adapter, state, created_at, started_at, ended_at, last_seq, attempt, \
         timeout_s, cancel_requested, outcome"
    };
}

fn ts(at: Option<DateTime<Utc>>) -> Option<String> {
    at.map(shared::time::format_ts)
}

/// Reads a status from a `tasks` row selected with [`status_columns`].
pub fn from_row(row: &PgRow) -> Result<TaskStatus, sqlx::Error> {
    Ok(TaskStatus {
        task_id: TaskId(row.try_get("task_id")?),
        name: row.try_get("name")?,
        adapter: row.try_get("adapter")?,
        state: row.try_get("state")?,
        created_at: shared::time::format_ts(row.try_get("created_at")?),
        started_at: ts(row.try_get("started_at")?),
        ended_at: ts(row.try_get("ended_at")?),
        last_seq: u64::try_from(row.try_get::<i64, _>("last_seq")?).unwrap_or_default(),
        attempt: u32::try_from(row.try_get::<i32, _>("attempt")?).unwrap_or_default(),
        timeout_s: row
            .try_get::<Option<i32>, _>("timeout_s")?
            .and_then(|t| u32::try_from(t).ok()),
        cancel_requested: row.try_get("cancel_requested")?,
        outcome: row.try_get("outcome")?,
    })
}

/// The tenant's task, or 404 (also for another tenant's task).
pub async fn find(
    pool: &PgPool,
    axon: &Stream,
    tenant: TenantId,
    task: TaskId,
) -> Result<TaskStatus, ApiError> {
    let row = sqlx::query(concat!(
        "SELECT ",
        status_columns!(),
        " FROM tasks WHERE tenant_id = $1 AND task_id = $2"
    ))
    .bind(tenant.0)
    .bind(task.0)
    .fetch_optional(pool)
    .await
    .map_err(|e| ApiError::unavailable("postgres", e))?;
    if let Some(row) = row {
        return from_row(&row).map_err(|e| ApiError::unavailable("postgres", e));
    }
    let start: Option<StartCommand> =
        shared::nats::last_on_subject(axon, names::start_subject(tenant, task))
            .await
            .map_err(|e| ApiError::unavailable("nats", e))?;
    let start = start.ok_or_else(|| ApiError::task_not_found(task))?;
    Ok(TaskStatus {
        task_id: task,
        name: start.name,
        adapter: start.adapter,
        state: "pending".into(),
        created_at: start.ts,
        started_at: None,
        ended_at: None,
        last_seq: 0,
        attempt: 0,
        timeout_s: start.timeout_s,
        cancel_requested: false,
        outcome: None,
    })
}
