//! `GET /mcp/tasks/{id}/stream` and `POST /mcp/tasks/{id}/resume`: SSE with `id: {seq}`,
//! `event: {kind}`, `data: {envelope}`. Backfill, then live tail with no gap and no
//! duplicate at the seam; ends after the terminal event.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State as Extract;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use shared::auth::Scope;
use shared::http::{ApiError, Caller, Json, Query, TaskPath};
use shared::ids::{TaskId, TenantId};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;

use crate::State;
use crate::hub::Subscription;
use crate::log::Logged;
use crate::status;

/// Events read from the stores per round trip.
const PAGE: usize = 1000;
/// Events buffered per client before the writer waits for the socket.
const BUFFER: usize = 256;
/// How often a client checks the hub, and polls the stores while the hub cannot read Redis.
const POLL: Duration = Duration::from_secs(1);
/// The largest `seq` a log can hold (Postgres `bigint`).
const MAX_SEQ: u64 = i64::MAX as u64;
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
        Some(token) => {
            shared::resume::verify(&state.hmac_secret, token, task).ok_or_else(|| {
                shared::http::unauthorized(
                    "invalid_resume_token",
                    "the resume_token is not valid for this task; use the one start_task returned",
                )
            })?
        }
        None => caller?.tenant_for(Scope::TasksRead)?,
    };
    let from = match last_event_id(&headers)? {
        Some(seq) => seq,
        None => query.since_seq.unwrap_or(0),
    };
    open(state, tenant, task, from).await
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
    // No log reaches Postgres' bigint limit; beyond it there is simply nothing to send.
    let from = from.min(MAX_SEQ);
    let status = status::find(&state.pool, &state.axon, tenant, task).await?;
    let (sender, receiver) = mpsc::channel(BUFFER);
    let subscription = state.hub.subscribe(task);
    let ended = terminal_state(&status.state) && status.last_seq <= from;
    if !ended {
        tokio::spawn(follow(
            state.clone(),
            tenant,
            task,
            from,
            subscription,
            sender,
        ));
    }
    metrics::gauge!("axon_sse_clients").increment(1.0);
    let events = futures::stream::unfold(
        (receiver, ClientGauge),
        |(mut receiver, gauge)| async move {
            let event: Arc<Logged> = receiver.recv().await?;
            Some((Ok::<_, Infallible>(sse_event(&event)), (receiver, gauge)))
        },
    );
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response())
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

/// Sends everything after `from` to `sender`: backfill, then live entries, filling any
/// gap from the stores, until the terminal event or until the client leaves.
async fn follow(
    state: State,
    tenant: TenantId,
    task: TaskId,
    from: u64,
    mut subscription: Subscription,
    sender: mpsc::Sender<Arc<Logged>>,
) {
    let mut next = from + 1;
    let outcome: Result<(), Stop> = async {
        backfill(&state, tenant, task, &mut next, &sender, None).await?;
        subscription.follow_from(next - 1);
        loop {
            let received = tokio::select! {
                received = subscription.receiver.recv() => received,
                () = tokio::time::sleep(POLL) => {
                    if state.hub.healthy() {
                        continue;
                    }
                    // The hub cannot read Redis: poll the stores instead.
                    Err(RecvError::Lagged(0))
                }
                () = sender.closed() => return Err(Stop::Left),
            };
            match received {
                Ok(event) if event.event.seq < next => {}
                Ok(event) => {
                    backfill(
                        &state,
                        tenant,
                        task,
                        &mut next,
                        &sender,
                        Some(event.event.seq),
                    )
                    .await?;
                    deliver(&sender, &event, &mut next).await?;
                }
                Err(RecvError::Lagged(_)) => {
                    backfill(&state, tenant, task, &mut next, &sender, None).await?;
                }
                Err(RecvError::Closed) => return Err(Stop::Left),
            }
        }
    }
    .await;
    if let Err(Stop::Failed(e)) = outcome {
        tracing::warn!(%task, error = %e, "SSE stream ended early");
    }
}

/// Why following stops.
enum Stop {
    /// The terminal event was sent.
    Ended,
    /// The client went away.
    Left,
    /// The stores failed.
    Failed(crate::log::Error),
}

/// Sends stored events from `next` on, up to (not including) `until` if given, else all.
async fn backfill(
    state: &State,
    tenant: TenantId,
    task: TaskId,
    next: &mut u64,
    sender: &mpsc::Sender<Arc<Logged>>,
    until: Option<u64>,
) -> Result<(), Stop> {
    while until.is_none_or(|until| *next < until) {
        let page = state
            .log
            .read(tenant, task, *next - 1, PAGE)
            .await
            .map_err(Stop::Failed)?;
        if page.is_empty() {
            break;
        }
        for event in &page {
            if until.is_some_and(|until| event.event.seq >= until) {
                return Ok(());
            }
            deliver(sender, event, next).await?;
        }
    }
    Ok(())
}

async fn deliver(
    sender: &mpsc::Sender<Arc<Logged>>,
    logged: &Arc<Logged>,
    next: &mut u64,
) -> Result<(), Stop> {
    if logged.event.seq != *next {
        return Ok(());
    }
    sender.send(logged.clone()).await.map_err(|_| Stop::Left)?;
    *next += 1;
    if logged.event.kind.is_terminal() {
        return Err(Stop::Ended);
    }
    Ok(())
}
