//! The tasks extension (`io.modelcontextprotocol/tasks`, SEP-2663) over AxonTask tasks:
//! the MCP task id is the AxonTask task id, and `tasks/get` and `tasks/cancel` are answered
//! from the task's state in Postgres and NATS, so any process answers after any restart.
//!
//! States: pending and running are `working`; succeeded is `completed`; failed and timeout
//! are `completed` with an `isError` result; canceled is `cancelled`.

use query_api::status::TaskStatus;
use rmcp::model::{
    CallToolResult, CreateTaskResult, DetailedTask, ErrorData as McpError, GetTaskResult, Task,
    TaskPayload, TaskStatus as McpStatus,
};
use serde_json::Value;
use shared::auth::{Principal, Scope};
use shared::events::EventKind;
use shared::http::ApiError;
use shared::ids::{TaskId, TenantId};
use shared::task::TaskState;

use crate::auth::tenant_for;
use crate::watch::{self, Ended};
use crate::{Backend, describe, tools};

/// How often a client should poll `tasks/get`.
const POLL_INTERVAL_MS: u64 = 1000;

/// The answer to a `run_task` call from a client that declared the extension.
pub fn created(status: &TaskStatus) -> CreateTaskResult {
    let task = Task::new(
        status.task_id.to_string(),
        McpStatus::Working,
        status.created_at.clone(),
        shared::time::now_ts(),
    )
    .with_poll_interval_ms(POLL_INTERVAL_MS);
    CreateTaskResult::new(task)
}

/// The result of `run_task` for a task that ended.
pub fn ended_result(ended: &Ended) -> CallToolResult {
    let detail = match ended.state.as_str() {
        "succeeded" => "succeeded".to_owned(),
        "failed" => format!(
            "failed: {}",
            ended.outcome["error"].as_str().unwrap_or("unknown error")
        ),
        "timeout" => "timed out".to_owned(),
        other => other.to_owned(),
    };
    let mut result = tools::success(
        format!("task {} {detail}", ended.task_id),
        serde_json::to_value(ended).expect("results serialize"),
    );
    result.is_error = Some(ended.state != TaskState::Succeeded.as_str());
    result
}

/// `tasks/get`.
pub async fn get(
    backend: &Backend,
    caller: &Principal,
    task_id: &str,
) -> Result<GetTaskResult, McpError> {
    let tenant = tenant_for(caller, Scope::TasksRead).map_err(protocol_error)?;
    let task = tools::task_id(task_id).map_err(protocol_error)?;
    let status = query_api::reads::status(&backend.queries, tenant, task)
        .await
        .map_err(protocol_error)?;
    let state = TaskState::parse(&status.state).unwrap_or(TaskState::Pending);
    let updated = status
        .ended_at
        .clone()
        .or_else(|| status.started_at.clone())
        .unwrap_or_else(|| status.created_at.clone());
    let mut summary = Task::new(
        task.to_string(),
        McpStatus::Working,
        status.created_at.clone(),
        updated,
    )
    .with_poll_interval_ms(POLL_INTERVAL_MS);
    if let Some(message) = latest_message(backend, tenant, task).await? {
        summary = summary.with_status_message(message);
    }
    let payload = match state {
        TaskState::Pending | TaskState::Running => TaskPayload::Working,
        TaskState::Canceled => TaskPayload::Cancelled,
        TaskState::Succeeded | TaskState::Failed | TaskState::Timeout => {
            let ended = Ended {
                task_id: task,
                state: status.state.clone(),
                outcome: status.outcome.clone().unwrap_or(Value::Null),
                last_seq: status.last_seq,
                output_tail: watch::output_tail(&backend.queries, tenant, task)
                    .await
                    .map_err(protocol_error)?,
            };
            let result = serde_json::to_value(ended_result(&ended)).expect("results serialize");
            let Value::Object(result) = result else {
                unreachable!("a tool result is an object")
            };
            TaskPayload::Completed { result }
        }
    };
    Ok(GetTaskResult::new(DetailedTask::new(summary, payload)))
}

/// `tasks/cancel`: the task's cancel, acknowledged at once; it then ends `cancelled`. A
/// task that already ended gets the same acknowledgement (SEP-2663: idempotent).
pub async fn cancel(backend: &Backend, caller: &Principal, task_id: &str) -> Result<(), McpError> {
    let tenant = tenant_for(caller, Scope::TasksWrite).map_err(protocol_error)?;
    let task = tools::task_id(task_id).map_err(protocol_error)?;
    match command_api::cancel_task(&backend.commands, tenant, task).await {
        Err(e) if e.code == "task_already_ended" => Ok(()),
        other => other.map_err(protocol_error),
    }
}

/// The latest progress or output line, for `statusMessage`.
async fn latest_message(
    backend: &Backend,
    tenant: TenantId,
    task: TaskId,
) -> Result<Option<String>, McpError> {
    let kinds = [EventKind::Progress, EventKind::Stdout, EventKind::Stderr];
    let latest = query_api::reads::latest(&backend.queries, tenant, task, &kinds, 1)
        .await
        .map_err(protocol_error)?;
    Ok(latest.first().map(describe::event))
}

/// A §3.7 error as a JSON-RPC error: bad input and unknown tasks are invalid params
/// (the message says how to fix the call), a backend failure is an internal error.
pub fn protocol_error(error: ApiError) -> McpError {
    let data = Some(serde_json::json!({"code": error.code}));
    if error.status.is_server_error() {
        McpError::internal_error(error.message, data)
    } else {
        McpError::invalid_params(error.message, data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ended_tasks_map_to_results() {
        let ended = |state: &str| Ended {
            task_id: TaskId::new(),
            state: state.to_owned(),
            outcome: json!({"error": "exit code 2", "exit_code": 2}),
            last_seq: 9,
            output_tail: vec!["hello".into()],
        };
        assert_eq!(ended_result(&ended("succeeded")).is_error, Some(false));
        let failed = ended_result(&ended("failed"));
        assert_eq!(failed.is_error, Some(true));
        assert_eq!(
            failed
                .structured_content
                .as_ref()
                .map(|v| v["last_seq"].clone()),
            Some(json!(9))
        );
        assert_eq!(ended_result(&ended("timeout")).is_error, Some(true));
    }
}
