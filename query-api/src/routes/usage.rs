//! `GET /api/usage?from=YYYY-MM-DD&to=YYYY-MM-DD`: the tenant's usage counters by UTC day.

use axum::extract::State as Extract;
use chrono::{Days, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use shared::auth::Scope;
use shared::http::{ApiError, Caller, Query};
use shared::usage;

use crate::State;

/// The longest range one request may ask for, in days.
const MAX_DAYS: u64 = 366;

/// The query: both ends included; by default the last 30 days.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageQuery {
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
}

/// One day's counters.
#[derive(Debug, Default, Serialize)]
pub struct Day {
    day: NaiveDate,
    tasks_started: i64,
    /// From each task's first start to its end, for tasks that ended that day.
    task_seconds: f64,
    events: i64,
    bytes_streamed: i64,
    stream_connections: i64,
}

/// The answer: the range and the days in it that have usage, oldest first.
#[derive(Debug, Serialize)]
pub struct Usage {
    from: NaiveDate,
    to: NaiveDate,
    days: Vec<Day>,
}

/// `GET /api/usage`.
pub async fn usage(
    Extract(state): Extract<State>,
    caller: Caller,
    Query(query): Query<UsageQuery>,
) -> Result<axum::Json<Usage>, ApiError> {
    let tenant = caller.tenant_for(Scope::TasksRead)?;
    let to = query.to.unwrap_or_else(|| Utc::now().date_naive());
    let from = query
        .from
        .unwrap_or_else(|| to.checked_sub_days(Days::new(29)).unwrap_or(to));
    let span = (to - from).num_days();
    if span < 0 || span >= MAX_DAYS as i64 {
        return Err(ApiError::bad_request(
            "invalid_range",
            format!(
                "from must not be after to, and the range at most {MAX_DAYS} days (dates as YYYY-MM-DD, UTC)"
            ),
        ));
    }
    let rows: Vec<(NaiveDate, String, i64)> = sqlx::query_as(
        "SELECT day, metric, value FROM usage_counters
         WHERE tenant_id = $1 AND day BETWEEN $2 AND $3 ORDER BY day",
    )
    .bind(tenant.0)
    .bind(from)
    .bind(to)
    .fetch_all(&state.pool)
    .await
    .map_err(|e| ApiError::unavailable("postgres", e))?;
    let mut days: Vec<Day> = Vec::new();
    for (day, metric, value) in rows {
        if days.last().is_none_or(|d| d.day != day) {
            days.push(Day {
                day,
                ..Day::default()
            });
        }
        let entry = days.last_mut().expect("pushed above");
        match metric.as_str() {
            usage::TASKS_STARTED => entry.tasks_started = value,
            usage::TASK_MS => entry.task_seconds = value as f64 / 1000.0,
            usage::EVENTS => entry.events = value,
            usage::BYTES_STREAMED => entry.bytes_streamed = value,
            usage::STREAM_CONNECTIONS => entry.stream_connections = value,
            _ => {}
        }
    }
    Ok(axum::Json(Usage { from, to, days }))
}
