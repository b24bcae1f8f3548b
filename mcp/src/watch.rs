//! Watching a task within one tool call: `stream_task` (a long poll that returns what is
//! new, or waits for it) and plain `run_task` (waits for the end). While they wait they
//! send `notifications/progress` when events arrive and every [`IDLE`] otherwise (at least
//! every 5 s), so hosts with idle timeouts keep the call open.

use std::time::Duration;

use futures::FutureExt;
use redis::aio::ConnectionManager;
use rmcp::model::{
    JsonObject, JsonRpcNotification, JsonRpcVersion2_0, MetaObject, NotificationMetaObject,
    ProgressNotification, ProgressNotificationParam, ProgressToken, ServerJsonRpcMessage,
    ServerNotification,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::ServerSseMessage;
use rmcp::{Peer, RoleServer};
use serde::Serialize;
use serde_json::{Value, json};
use shared::events::EventKind;
use shared::events::wire::Envelope;
use shared::http::ApiError;
use shared::ids::{TaskId, TenantId};
use shared::task::TaskState;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::describe;

/// The longest silence between two progress notifications while a call waits: hosts are
/// promised one at least every 5 s, and a busy machine may fire a timer late.
pub const IDLE: Duration = Duration::from_secs(4);
/// The longest one plain `run_task` call follows its task (hosts cut calls far sooner;
/// this bounds what a call abandoned in a session keeps running).
pub const RUN_WAIT: Duration = Duration::from_secs(3600);
/// Output lines kept for the end of a `run_task` result.
const TAIL_LINES: usize = 20;

/// Where a call's progress notifications go.
enum Sink {
    /// To the client, through the session or request the call belongs to.
    Peer(Peer<RoleServer>),
    /// Into the call's resumable stream (a call this process took over).
    Stream {
        redis: ConnectionManager,
        stream_id: String,
    },
}

/// Progress notifications of one tool call (none when the client gave no token).
pub struct Progress {
    sink: Sink,
    token: Option<ProgressToken>,
    sent: u32,
    /// Events up to this seq were reported before (by the process that began the call).
    reported: u64,
}

impl Progress {
    /// The progress channel of the call `context` belongs to.
    pub fn new(context: &RequestContext<RoleServer>) -> Self {
        Self {
            sink: Sink::Peer(context.peer.clone()),
            token: context.meta.get_progress_token(),
            sent: 0,
            reported: 0,
        }
    }

    /// Progress of a call taken over: `sent` notifications went out, the last reporting
    /// events up to seq `reported`; new ones go into the call's stream `stream_id`.
    pub fn resumed(
        redis: ConnectionManager,
        stream_id: String,
        token: Option<ProgressToken>,
        sent: u32,
        reported: u64,
    ) -> Self {
        Self {
            sink: Sink::Stream { redis, stream_id },
            token,
            sent,
            reported,
        }
    }

    /// How many notifications this call has sent.
    pub fn sent(&self) -> u32 {
        self.sent
    }

    /// The last seq reported.
    pub fn reported(&self) -> u64 {
        self.reported
    }

    /// Reports events that arrived (those not reported before).
    pub async fn events(&mut self, task: TaskId, events: &[Envelope]) {
        let fresh: Vec<Envelope> = events
            .iter()
            .filter(|e| e.seq > self.reported)
            .cloned()
            .collect();
        if let Some(message) = describe::batch(&fresh) {
            let last = fresh.last().map_or(self.reported, |e| e.seq);
            self.send(task, last, message).await;
        }
    }

    /// Sends one notification; `progress` counts up by one each time. Its `_meta` names the
    /// task and the last `seq` reported, so a client (or a process taking the call over)
    /// can go on from there.
    pub async fn send(&mut self, task: TaskId, last_seq: u64, message: String) {
        let Some(token) = self.token.clone() else {
            return;
        };
        self.sent += 1;
        self.reported = self.reported.max(last_seq);
        let mut meta = JsonObject::new();
        meta.insert(TASK_META.into(), json!(task));
        meta.insert(SEQ_META.into(), json!(self.reported));
        let mut param = ProgressNotificationParam::new(token, f64::from(self.sent));
        param.message = Some(message);
        param.meta = Some(NotificationMetaObject(MetaObject(meta)));
        let delivered = match &self.sink {
            Sink::Peer(peer) => peer.notify_progress(param).await.map_err(|e| e.to_string()),
            Sink::Stream { redis, stream_id } => {
                let message = ServerJsonRpcMessage::Notification(JsonRpcNotification {
                    jsonrpc: JsonRpcVersion2_0,
                    notification: ServerNotification::ProgressNotification(
                        ProgressNotification::new(param),
                    ),
                });
                crate::store::events::append(
                    redis,
                    stream_id,
                    &ServerSseMessage::from_message(message),
                )
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
            }
        };
        if let Err(e) = delivered {
            tracing::debug!(%task, error = %e, "progress notification not delivered");
        }
    }
}

/// The progress `_meta` key naming the task.
pub const TASK_META: &str = "io.axontask/task_id";
/// The progress `_meta` key holding the last seq reported.
pub const SEQ_META: &str = "io.axontask/last_seq";

/// What `stream_task` returns.
#[derive(Debug, Serialize)]
pub struct Batch {
    /// Events after `since_seq`, in order, as in every other API.
    pub events: Vec<Envelope>,
    /// The seq of the last event returned (`since_seq` when none): pass it next time.
    pub next_seq: u64,
    /// The task's state now.
    pub state: String,
    /// Whether the task ended and every event up to its end was returned.
    pub done: bool,
}

/// How a `stream_task` call waits.
pub struct StreamRequest {
    /// The caller's tenant.
    pub tenant: TenantId,
    /// The task.
    pub task: TaskId,
    /// Events after this seq.
    pub since: u64,
    /// How long to wait when nothing is new.
    pub wait: Duration,
    /// At most this many events.
    pub max_events: usize,
}

/// `stream_task`: what exists after `since` at once, else waits up to `wait` for more,
/// returning early when the task ends, the client cancels, or `max_events` arrived.
pub async fn stream(
    queries: &query_api::State,
    request: StreamRequest,
    progress: &mut Progress,
    cancel: &CancellationToken,
) -> Result<Batch, ApiError> {
    let StreamRequest {
        tenant,
        task,
        since,
        wait,
        max_events,
    } = request;
    let status = query_api::reads::status(queries, tenant, task).await?;
    query_api::reads::check_position(&status, since)?;
    let page = query_api::reads::page(queries, tenant, task, since, max_events).await?;
    let ended = is_terminal_state(&status.state);
    if !page.events.is_empty() || ended || wait.is_zero() {
        // An ended task whose events up to its end were all seen before is done too.
        let seen_all = ended && page.events.last().map_or(since, |e| e.seq) >= status.last_seq;
        return Ok(batch(since, page.events, status.state, seen_all));
    }
    let mut follower = queries.follow(tenant, task, since);
    let deadline = Instant::now() + wait;
    let mut idle = idle_timer();
    let mut events: Vec<Envelope> = Vec::new();
    loop {
        let last_seq = events.last().map_or(since, |e| e.seq);
        tokio::select! {
            next = follower.next_event() => {
                let Some(first) = next else { break };
                let mut arrived = vec![first.event.clone()];
                while events.len() + arrived.len() < max_events
                    && !arrived.last().is_some_and(|e| e.kind.is_terminal())
                {
                    match follower.next_event().now_or_never() {
                        Some(Some(more)) => arrived.push(more.event.clone()),
                        _ => break,
                    }
                }
                progress.events(task, &arrived).await;
                events.extend(arrived);
                idle.reset();
                if events.len() >= max_events || events.last().is_some_and(|e| e.kind.is_terminal()) {
                    break;
                }
            }
            () = tokio::time::sleep_until(deadline) => break,
            () = cancel.cancelled() => break,
            _ = idle.tick() => {
                progress.send(task, last_seq, waiting(task, last_seq)).await;
            }
        }
    }
    let state = match events.last() {
        Some(last) if last.kind.is_terminal() => String::new(),
        _ => query_api::reads::status(queries, tenant, task).await?.state,
    };
    Ok(batch(since, events, state, false))
}

/// The answer: the terminal event, when it is among `events`, sets the state and `done`.
fn batch(since: u64, events: Vec<Envelope>, state: String, seen_all: bool) -> Batch {
    let next_seq = events.last().map_or(since, |e| e.seq);
    let (state, done) = match events.last() {
        Some(last) if last.kind.is_terminal() => (state_of(last.kind).to_owned(), true),
        _ => (state, seen_all),
    };
    Batch {
        events,
        next_seq,
        state,
        done,
    }
}

/// What plain `run_task` returns once the task ended.
#[derive(Debug, Serialize)]
pub struct Ended {
    /// The task.
    pub task_id: TaskId,
    /// succeeded, failed, timeout or canceled.
    pub state: String,
    /// The terminal event's payload: `result`, or `error` (and `exit_code`).
    pub outcome: Value,
    /// The seq of the terminal event.
    pub last_seq: u64,
    /// The last lines of output (stdout and stderr, in order).
    pub output_tail: Vec<String>,
}

/// Follows `task` from after `since` to its end, reporting progress (one notification per
/// batch of events that arrived together); `None` when the client canceled the call or
/// [`RUN_WAIT`] passed first (the task goes on either way).
pub async fn until_end(
    queries: &query_api::State,
    tenant: TenantId,
    task: TaskId,
    since: u64,
    progress: &mut Progress,
    cancel: &CancellationToken,
) -> Result<Option<Ended>, ApiError> {
    let mut follower = queries.follow(tenant, task, since);
    let mut idle = idle_timer();
    let deadline = tokio::time::sleep(RUN_WAIT);
    tokio::pin!(deadline);
    let mut last_seq = since;
    loop {
        tokio::select! {
            next = follower.next_event() => {
                let Some(first) = next else {
                    return Err(ApiError::unavailable("log", "the task's log could not be read"));
                };
                let mut arrived = vec![first.event.clone()];
                while !arrived.last().is_some_and(|e| e.kind.is_terminal()) {
                    match follower.next_event().now_or_never() {
                        Some(Some(more)) => arrived.push(more.event.clone()),
                        _ => break,
                    }
                }
                progress.events(task, &arrived).await;
                idle.reset();
                let last = arrived.last().expect("a batch holds the first event");
                last_seq = last.seq;
                if last.kind.is_terminal() {
                    return Ok(Some(Ended {
                        task_id: task,
                        state: state_of(last.kind).to_owned(),
                        outcome: last.payload.clone(),
                        last_seq,
                        output_tail: output_tail(queries, tenant, task).await?,
                    }));
                }
            }
            () = cancel.cancelled() => return Ok(None),
            () = &mut deadline => return Ok(None),
            _ = idle.tick() => progress.send(task, last_seq, waiting(task, last_seq)).await,
        }
    }
}

/// The task's last lines of output, oldest first.
pub async fn output_tail(
    queries: &query_api::State,
    tenant: TenantId,
    task: TaskId,
) -> Result<Vec<String>, ApiError> {
    let kinds = [EventKind::Stdout, EventKind::Stderr];
    let latest = query_api::reads::latest(queries, tenant, task, &kinds, TAIL_LINES).await?;
    Ok(latest
        .iter()
        .rev()
        .map(|e| e.payload["line"].as_str().unwrap_or_default().to_owned())
        .collect())
}

fn idle_timer() -> tokio::time::Interval {
    let mut idle = tokio::time::interval_at(Instant::now() + IDLE, IDLE);
    idle.set_missed_tick_behavior(MissedTickBehavior::Delay);
    idle
}

fn waiting(task: TaskId, last_seq: u64) -> String {
    format!("waiting for task {task}: nothing new after seq {last_seq}")
}

fn is_terminal_state(state: &str) -> bool {
    TaskState::parse(state).is_some_and(TaskState::is_terminal)
}

/// The task state a terminal event kind ends in.
pub fn state_of(kind: EventKind) -> &'static str {
    match kind {
        EventKind::Succeeded => TaskState::Succeeded.as_str(),
        EventKind::Failed => TaskState::Failed.as_str(),
        EventKind::Canceled => TaskState::Canceled.as_str(),
        EventKind::Timeout => TaskState::Timeout.as_str(),
        _ => TaskState::Running.as_str(),
    }
}
