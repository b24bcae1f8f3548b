//! The tool bodies: each checks the caller's scope, parses its arguments, calls
//! command-api or query-api, and shapes the answer as a structured result with one short
//! line of text. Errors come back as §3.7 errors, shown to the model as `isError` results.

use std::time::Duration;

use rmcp::RoleServer;
use rmcp::model::{CallToolResponse, CallToolResult, JsonObject};
use rmcp::service::RequestContext;
use serde_json::{Value, json};
use shared::auth::{Principal, Scope};
use shared::http::ApiError;
use shared::ids::{TaskId, TenantId};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::auth::tenant_for;
use crate::sessions::CallId;
use crate::tools::{
    self, ListArgs, MAX_EVENTS, MAX_WAIT_S, ResumeArgs, RunArgs, StartArgs, StreamArgs, TaskArgs,
    failure, success,
};
use crate::watch::{self, Progress, StreamRequest};
use crate::{Backend, tasks};

/// How long `resume_task` waits for new events.
const RESUME_WAIT: Duration = Duration::from_secs(25);
/// Most events `resume_task` returns.
const RESUME_EVENTS: usize = 500;

/// One tool call's circumstances: where its progress goes, what cancels it, whether the
/// client takes tasks, and the call's identity.
pub struct Invocation {
    /// Where progress notifications go.
    pub progress: Progress,
    /// Canceled when the client cancels the call.
    pub cancel: CancellationToken,
    /// Whether the client declared the tasks extension.
    pub wants_task: bool,
    /// The call's id (it keys what the call starts).
    pub call_id: Uuid,
    /// How long the call already waited (for a call taken over from another process).
    pub waited: Duration,
}

impl Invocation {
    /// The circumstances of the call `context` belongs to.
    pub fn new(context: &RequestContext<RoleServer>) -> Self {
        Self {
            progress: Progress::new(context),
            cancel: context.ct.clone(),
            wants_task: context
                .client_capabilities()
                .is_some_and(|caps| caps.supports_tasks()),
            call_id: context
                .extensions
                .get::<CallId>()
                .map_or_else(Uuid::now_v7, |id| id.0),
            waited: Duration::ZERO,
        }
    }
}

type Outcome = Result<CallToolResult, ApiError>;

fn to_value<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).expect("results serialize")
}

/// `start_task`.
pub async fn start(backend: &Backend, caller: &Principal, args: Option<JsonObject>) -> Outcome {
    tenant_for(caller, Scope::TasksWrite)?;
    let args: StartArgs = tools::parse("start_task", args)?;
    let body = command_api::StartTask {
        name: args.name,
        adapter: args.adapter,
        args: args.args.unwrap_or_else(|| json!({})),
        timeout_s: args.timeout_s,
        idempotency_key: args.idempotency_key,
        priority: args.priority,
        queue_if_busy: args.queue_if_busy,
    };
    let started = command_api::start_task(&backend.commands, caller, body).await?;
    Ok(success(
        format!(
            "started task {}; watch it with stream_task",
            started.task_id
        ),
        to_value(&started),
    ))
}

/// The caller's tenant (holding `scope`) and the task of a tool that takes only a task.
fn one_task(
    caller: &Principal,
    scope: Scope,
    tool: &str,
    args: Option<JsonObject>,
) -> Result<(TenantId, TaskId), ApiError> {
    let tenant = tenant_for(caller, scope)?;
    let args: TaskArgs = tools::parse(tool, args)?;
    Ok((tenant, tools::task_id(&args.task_id)?))
}

/// `get_task_status`.
pub async fn status(backend: &Backend, caller: &Principal, args: Option<JsonObject>) -> Outcome {
    let (tenant, task) = one_task(caller, Scope::TasksRead, "get_task_status", args)?;
    let status = query_api::reads::status(&backend.queries, tenant, task).await?;
    Ok(success(
        format!(
            "task {task} is {} (last seq {})",
            status.state, status.last_seq
        ),
        to_value(&status),
    ))
}

/// `stream_task`.
pub async fn stream(
    backend: &Backend,
    caller: &Principal,
    args: Option<JsonObject>,
    call: &mut Invocation,
) -> Outcome {
    let tenant = tenant_for(caller, Scope::TasksRead)?;
    let args: StreamArgs = tools::parse("stream_task", args)?;
    let task = tools::task_id(&args.task_id)?;
    if args.wait_s > MAX_WAIT_S {
        return Err(ApiError::bad_request(
            "invalid_wait",
            format!("wait_s must be between 0 and {MAX_WAIT_S} seconds"),
        ));
    }
    if !(1..=MAX_EVENTS).contains(&args.max_events) {
        return Err(ApiError::bad_request(
            "invalid_max_events",
            format!("max_events must be between 1 and {MAX_EVENTS}"),
        ));
    }
    let request = StreamRequest {
        tenant,
        task,
        since: args.since_seq,
        wait: Duration::from_secs(args.wait_s).saturating_sub(call.waited),
        max_events: args.max_events,
    };
    watch_batch(backend, request, call).await
}

/// `resume_task`: `stream_task` from `last_seq` with the default wait.
pub async fn resume(
    backend: &Backend,
    caller: &Principal,
    args: Option<JsonObject>,
    call: &mut Invocation,
) -> Outcome {
    let tenant = tenant_for(caller, Scope::TasksRead)?;
    let args: ResumeArgs = tools::parse("resume_task", args)?;
    let task = tools::task_id(&args.task_id)?;
    let request = StreamRequest {
        tenant,
        task,
        since: args.last_seq,
        wait: RESUME_WAIT.saturating_sub(call.waited),
        max_events: RESUME_EVENTS,
    };
    watch_batch(backend, request, call).await
}

async fn watch_batch(backend: &Backend, request: StreamRequest, call: &mut Invocation) -> Outcome {
    let (task, since) = (request.task, request.since);
    let batch = watch::stream(&backend.queries, request, &mut call.progress, &call.cancel).await?;
    let mut summary = format!(
        "{} events after seq {since} (next_seq {}); task {task} is {}",
        batch.events.len(),
        batch.next_seq,
        batch.state
    );
    if let Some(last) = batch.events.last() {
        summary.push_str(&format!("; last: {}", crate::describe::event(last)));
    }
    if !batch.done && batch.events.is_empty() && batch.state != "pending" {
        summary.push_str("; call again to keep waiting");
    }
    Ok(success(summary, to_value(&batch)))
}

/// `cancel_task`.
pub async fn cancel(backend: &Backend, caller: &Principal, args: Option<JsonObject>) -> Outcome {
    let (tenant, task) = one_task(caller, Scope::TasksWrite, "cancel_task", args)?;
    command_api::cancel_task(&backend.commands, tenant, task).await?;
    Ok(success(
        format!("cancel of task {task} requested; it ends as canceled"),
        json!({"canceled": true}),
    ))
}

/// `list_tasks`.
pub async fn list(backend: &Backend, caller: &Principal, args: Option<JsonObject>) -> Outcome {
    let tenant = tenant_for(caller, Scope::TasksRead)?;
    let args: ListArgs = tools::parse("list_tasks", args)?;
    let query = query_api::reads::ListQuery {
        state: args.state,
        limit: args.limit,
        cursor: args.cursor,
    };
    let page = query_api::reads::list(&backend.queries, tenant, &query).await?;
    let more = if page.next_cursor.is_some() {
        "; pass next_cursor as cursor for more"
    } else {
        ""
    };
    Ok(success(
        format!("{} tasks{more}", page.tasks.len()),
        to_value(&page),
    ))
}

/// `verify_task`.
pub async fn verify(backend: &Backend, caller: &Principal, args: Option<JsonObject>) -> Outcome {
    let (tenant, task) = one_task(caller, Scope::TasksRead, "verify_task", args)?;
    let verdict = query_api::audit::verify(&backend.queries, tenant, task).await?;
    Ok(success(verdict.summary.clone(), to_value(&verdict)))
}

/// `run_task`: a task handle at once for clients with the tasks extension; otherwise
/// progress notifications and the final result in this one call. The task's start is
/// keyed by the call, so a call taken over by another process starts nothing new.
pub async fn run(
    backend: &Backend,
    caller: &Principal,
    args: Option<JsonObject>,
    call: &mut Invocation,
) -> Result<CallToolResponse, ApiError> {
    let tenant = tenant_for(caller, Scope::TasksWrite)?;
    let args: RunArgs = tools::parse("run_task", args)?;
    let body = command_api::StartTask {
        name: args.name,
        adapter: args.adapter,
        args: args.args.unwrap_or_else(|| json!({})),
        timeout_s: args.timeout_s,
        idempotency_key: Some(format!("mcp-run:{}", call.call_id)),
        priority: args.priority,
        queue_if_busy: args.queue_if_busy,
    };
    let started = command_api::start_task(&backend.commands, caller, body).await?;
    let task = started.task_id;
    if call.wants_task {
        let status = query_api::reads::status(&backend.queries, tenant, task).await?;
        return Ok(CallToolResponse::Task(tasks::created(&status)));
    }
    if call.progress.sent() == 0 {
        let first = format!(
            "task {task} started; if this call is cut off, call resume_task with task_id {task} and last_seq 0"
        );
        call.progress.send(task, 0, first).await;
    }
    let from = call.progress.reported();
    let ended = watch::until_end(
        &backend.queries,
        tenant,
        task,
        from,
        &mut call.progress,
        &call.cancel,
    )
    .await?;
    let Some(ended) = ended else {
        return Ok(failure(&ApiError::bad_request(
            "call_ended_early",
            format!(
                "this call stopped waiting (canceled, or after {} s); task {task} goes on: call resume_task with last_seq {} to follow it",
                watch::RUN_WAIT.as_secs(),
                call.progress.reported()
            ),
        ))
        .into());
    };
    Ok(tasks::ended_result(&ended).into())
}

/// Runs tool `name` (one of §3.9); `None` for a name that is not one of them.
pub async fn dispatch(
    backend: &Backend,
    caller: &Principal,
    name: &str,
    args: Option<JsonObject>,
    call: &mut Invocation,
) -> Option<CallToolResponse> {
    let outcome = match name {
        "start_task" => start(backend, caller, args).await,
        "get_task_status" => status(backend, caller, args).await,
        "stream_task" => stream(backend, caller, args, call).await,
        "resume_task" => resume(backend, caller, args, call).await,
        "cancel_task" => cancel(backend, caller, args).await,
        "list_tasks" => list(backend, caller, args).await,
        "verify_task" => verify(backend, caller, args).await,
        "run_task" => {
            return Some(
                run(backend, caller, args, call)
                    .await
                    .unwrap_or_else(|e| failure(&e).into()),
            );
        }
        _ => return None,
    };
    Some(outcome.unwrap_or_else(|e| failure(&e)).into())
}

/// Whether running tool `name` again (as a process taking a call over does) is safe:
/// everything but `start_task`, whose task would start twice without an idempotency key.
pub fn rerunnable(name: &str) -> bool {
    name != "start_task"
}
