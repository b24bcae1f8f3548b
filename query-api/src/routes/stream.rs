//! `GET /mcp/tasks/{id}/stream` and `POST /mcp/tasks/{id}/resume`: SSE with `id: {seq}`,
//! `event: {kind}`, `data: {envelope}`, from a [`Follower`]; ends after the terminal event.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State as Extract;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::Deserialize;
use shared::auth::Scope;
use shared::http::{ApiError, Caller, Json, Query, TaskPath};
use shared::ids::{TaskId, TenantId};
use shared::resume::Refused;

use crate::State;
use crate::follow::Follower;
use crate::log::Logged;
use crate::status;

/// The keep-alive comment interval.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Query of the stream route.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamQuery {
    since_seq: Option<u64>,
    resume_token: Option<String>,
}

/// Body of the resume route.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResumeBody {
    last_seq: u64,
}

/// `GET /mcp/tasks/{id}/stream?since_seq=N[&resume_token=…]`.
pub async fn stream(
    Extract(state): Extract<State>,
    TaskPath(task): TaskPath,
    Query(query): Query<StreamQuery>,
    headers: HeaderMap,
    caller: Result<Caller, ApiError>,
) -> Result<Response, ApiError> {
    let tenant = match &query.resume_token {
        Some(token) => token_tenant(&state, token, task).await?,
        None => caller?.tenant_for(Scope::TasksRead)?,
    };
    let from = match last_event_id(&headers)? {
        Some(seq) => seq,
        None => query.since_seq.unwrap_or(0),
    };
    open(state, tenant, task, from).await
}

/// The tenant whose `task` a resume token opens: the token must be this server's, for
/// this task, unexpired, and minted with a key that is still live.
async fn token_tenant(state: &State, token: &str, task: TaskId) -> Result<TenantId, ApiError> {
    let refused = |why: Refused| {
        let code = match why {
            Refused::Invalid => "invalid_resume_token",
            Refused::Expired => "expired_resume_token",
        };
        shared::http::unauthorized(code, &why.to_string())
    };
    let key = shared::resume::verify(&state.hmac_secret, token, task, shared::time::unix_now())
        .map_err(refused)?;
    match shared::auth::lookup_by_id(&state.pool, key).await {
        Ok(Some(principal)) => Ok(principal.tenant_id),
        Ok(None) => Err(shared::http::unauthorized(
            "invalid_resume_token",
            "the API key that started this task was revoked or expired, and its resume tokens with it",
        )),
        Err(e) => Err(ApiError::unavailable("postgres", e)),
    }
}

/// `POST /mcp/tasks/{id}/resume {last_seq}`.
pub async fn resume(
    Extract(state): Extract<State>,
    caller: Caller,
    TaskPath(task): TaskPath,
    Json(body): Json<ResumeBody>,
) -> Result<Response, ApiError> {
    let tenant = caller.tenant_for(Scope::TasksRead)?;
    open(state, tenant, task, body.last_seq).await
}

fn last_event_id(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(value) = headers.get("last-event-id") else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .map(Some)
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_last_event_id",
                "Last-Event-ID must be the seq (an integer) of the last event received",
            )
        })
}

async fn open(
    state: State,
    tenant: TenantId,
    task: TaskId,
    from: u64,
) -> Result<Response, ApiError> {
    let slot = take_slot(&state, tenant).await?;
    // Subscribe before reading anything, so no live event falls between.
    let subscription = state.hub.subscribe(task);
    let status = status::find(&state.pool, &state.axon, tenant, task).await?;
    crate::reads::check_position(&status, from)?;
    let usage = state.usage.stream(tenant);
    let ended = terminal_state(&status.state) && status.last_seq <= from;
    let state_shutdown = state.shutdown.clone();
    let follower = (!ended).then(|| Follower::new(state, tenant, task, from, subscription));
    metrics::gauge!("axon_sse_clients").increment(1.0);
    let shutdown = state_shutdown.cancelled_owned();
    let events = futures::stream::unfold(
        (follower, ClientGauge, slot, usage),
        |(mut follower, gauge, slot, mut usage)| async move {
            let event = follower.as_mut()?.next_event().await?;
            usage.sent(event.json.len());
            Some((
                Ok::<_, Infallible>(sse_event(&event)),
                (follower, gauge, slot, usage),
            ))
        },
    )
    // On shutdown the stream ends at once; the client resumes elsewhere with Last-Event-ID.
    .take_until(shutdown);
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response())
}

/// A stream slot of `tenant`, within this server's limit and the tenant's plan.
async fn take_slot(state: &State, tenant: TenantId) -> Result<crate::streams::Slot, ApiError> {
    let plan = match &state.limits {
        Some((plans, config)) => {
            let plan = plans
                .of(tenant)
                .await
                .map_err(|e| ApiError::unavailable("postgres", e))?;
            Some((plan, config.of(plan).sse_streams as usize))
        }
        None => None,
    };
    let quota = plan.map_or(usize::MAX, |(_, quota)| quota);
    if let Some(slot) = state.streams.take(tenant, quota) {
        return Ok(slot);
    }
    Err(match plan {
        Some((plan, quota)) if quota < state.streams.max() => ApiError::too_many(
            "quota_exceeded",
            format!(
                "this tenant has {quota} streams open on this server, the sse_streams of plan {}; one frees as soon as a stream closes",
                plan.as_str()
            ),
            5,
        ),
        _ => ApiError::too_many(
            "too_many_streams",
            format!(
                "this tenant has {} streams open on this server, its limit (SSE_MAX_STREAMS_PER_TENANT); close one, or retry later",
                state.streams.max()
            ),
            5,
        ),
    })
}

fn terminal_state(state: &str) -> bool {
    shared::task::TaskState::parse(state).is_some_and(|s| s.is_terminal())
}

/// Counts a connected SSE client until its stream is dropped.
struct ClientGauge;

impl Drop for ClientGauge {
    fn drop(&mut self) {
        metrics::gauge!("axon_sse_clients").decrement(1.0);
    }
}

fn sse_event(logged: &Logged) -> Event {
    Event::default()
        .id(logged.event.seq.to_string())
        .event(logged.event.kind.as_str())
        .data(&logged.json)
}
