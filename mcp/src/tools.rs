//! The tools of §3.9: their arguments (JSON Schemas generated from these types), their
//! annotations, and how a result or an error is shown to the model.

use std::sync::{Arc, LazyLock};

use rmcp::model::{CallToolResult, ContentBlock, JsonObject, Tool, ToolAnnotations};
use schemars::JsonSchema;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use shared::http::ApiError;
use shared::ids::TaskId;

/// Longest `wait_s` of `stream_task`: hosts cut tool calls at about a minute.
pub const MAX_WAIT_S: u64 = 60;
/// Most events one `stream_task` returns.
pub const MAX_EVENTS: usize = 1000;

fn default_wait_s() -> u64 {
    25
}

fn default_max_events() -> usize {
    500
}

/// `start_task` and `run_task` (which has no idempotency key of its own).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StartArgs {
    /// A name for the task, 1 to 200 characters.
    pub name: String,
    /// The adapter that runs it: `mock` or `shell` (as the operator enabled them).
    pub adapter: String,
    /// The adapter's arguments: for `shell`, `{"command": "make test"}`; for `mock`,
    /// `{"steps": 5, "interval_ms": 100}`.
    #[serde(default)]
    #[schemars(extend("type" = "object"))]
    pub args: Option<Value>,
    /// Seconds before the task is stopped and ends as `timeout`.
    pub timeout_s: Option<u32>,
    /// The same key always means the same task: a retried start starts nothing new.
    pub idempotency_key: Option<String>,
    /// 0 to 9 (default 4): among your waiting tasks, higher runs sooner.
    pub priority: Option<u8>,
    /// When your plan's concurrent tasks are all taken: wait in the queue (true) instead
    /// of an error.
    #[serde(default)]
    pub queue_if_busy: bool,
}

/// `run_task`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunArgs {
    /// A name for the task, 1 to 200 characters.
    pub name: String,
    /// The adapter that runs it: `mock` or `shell` (as the operator enabled them).
    pub adapter: String,
    /// The adapter's arguments (see `start_task`).
    #[serde(default)]
    #[schemars(extend("type" = "object"))]
    pub args: Option<Value>,
    /// Seconds before the task is stopped and ends as `timeout`.
    pub timeout_s: Option<u32>,
    /// 0 to 9 (default 4): among your waiting tasks, higher runs sooner.
    pub priority: Option<u8>,
    /// When your plan's concurrent tasks are all taken: wait in the queue (true) instead
    /// of an error.
    #[serde(default)]
    pub queue_if_busy: bool,
}

/// Tools that take only a task.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskArgs {
    /// The task id that `start_task` or `run_task` returned.
    pub task_id: String,
}

/// `stream_task`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StreamArgs {
    /// The task id that `start_task` or `run_task` returned.
    pub task_id: String,
    /// Return events after this seq: 0 for all, or the `next_seq` of the last call.
    #[serde(default)]
    pub since_seq: u64,
    /// When nothing is new, wait up to this many seconds (0 to 60) for more.
    #[serde(default = "default_wait_s")]
    pub wait_s: u64,
    /// Return at most this many events (1 to 1000).
    #[serde(default = "default_max_events")]
    pub max_events: usize,
}

/// `resume_task`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResumeArgs {
    /// The task id that `start_task` or `run_task` returned.
    pub task_id: String,
    /// The seq of the last event you received (0 for none).
    pub last_seq: u64,
}

/// `list_tasks`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListArgs {
    /// Only tasks in this state: pending, running, succeeded, failed, timeout, canceled.
    pub state: Option<String>,
    /// At most this many tasks (1 to 1000, default 50).
    pub limit: Option<usize>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// The tool list, in the order of §3.9 (schemas generated once: rmcp looks tools up on
/// every call).
pub fn list() -> &'static [Tool] {
    static TOOLS: LazyLock<Vec<Tool>> = LazyLock::new(build);
    &TOOLS
}

fn build() -> Vec<Tool> {
    let read_only = || ToolAnnotations::new().read_only(true).open_world(false);
    vec![
        tool::<StartArgs>(
            "start_task",
            "Start a background task (a shell command, a mock job) and return its task_id at \
             once. Watch it with stream_task; it keeps running if you disconnect.",
            ToolAnnotations::new()
                .read_only(false)
                .destructive(false)
                .idempotent(false)
                .open_world(true),
        ),
        tool::<TaskArgs>(
            "get_task_status",
            "The task's state (pending, running, succeeded, failed, timeout, canceled), its \
             last_seq and, once ended, its outcome.",
            read_only(),
        ),
        tool::<StreamArgs>(
            "stream_task",
            "The task's events after since_seq. Returns at once when there are some; otherwise \
             waits up to wait_s for more, sending progress notifications as they arrive, and \
             returns early when the task ends. Call again with since_seq = next_seq until done.",
            read_only(),
        ),
        tool::<ResumeArgs>(
            "resume_task",
            "Pick a task up after a disconnect: its events after last_seq, as stream_task.",
            read_only(),
        ),
        tool::<TaskArgs>(
            "cancel_task",
            "Stop a task: its process is terminated. Canceling a canceled task is fine.",
            ToolAnnotations::new()
                .read_only(false)
                .destructive(true)
                .idempotent(true)
                .open_world(false),
        ),
        tool::<ListArgs>(
            "list_tasks",
            "Your tasks, newest first, optionally only those in one state.",
            read_only(),
        ),
        tool::<TaskArgs>(
            "verify_task",
            "Verify the task for an audit: its hash-chained log (every seq, link and hash, nothing \
             after the end), its signed receipt, and the receipt's inclusion in the tenant's \
             signed transparency log. Returns verdict (verified, failed, incomplete) and the \
             first failure with its seq and reason.",
            read_only(),
        ),
        tool::<RunArgs>(
            "run_task",
            "Start a task and wait for its end in one call, with progress notifications. With \
             the tasks extension it returns a task at once; otherwise, if the call is cut off, \
             call resume_task with the task_id from the first progress message.",
            ToolAnnotations::new()
                .read_only(false)
                .destructive(false)
                .idempotent(false)
                .open_world(true),
        ),
    ]
}

fn tool<A: JsonSchema + 'static>(
    name: &'static str,
    description: &'static str,
    annotations: ToolAnnotations,
) -> Tool {
    Tool::new(name, description, Arc::new(JsonObject::new()))
        .with_input_schema::<A>()
        .annotate(annotations)
}

/// A tool's arguments, or a message telling the model how to fix the call.
pub fn parse<A: DeserializeOwned>(
    tool: &str,
    arguments: Option<JsonObject>,
) -> Result<A, ApiError> {
    serde_json::from_value(Value::Object(arguments.unwrap_or_default())).map_err(|e| {
        ApiError::bad_request(
            "invalid_arguments",
            format!("invalid arguments for {tool}: {e}; see the tool's inputSchema"),
        )
    })
}

/// A task id argument, or a message saying what one looks like.
pub fn task_id(text: &str) -> Result<TaskId, ApiError> {
    text.parse().map_err(|_| {
        ApiError::bad_request(
            "invalid_task_id",
            format!("'{text}' is not a task id; task ids are UUIDs as returned by start_task"),
        )
    })
}

/// A result: the structured value, and one short line for people.
pub fn success(summary: String, value: Value) -> CallToolResult {
    let mut result = CallToolResult::structured(value);
    result.content = vec![ContentBlock::text(summary)];
    result
}

/// A failed call shown to the model (`isError: true`): what went wrong and how to fix it.
pub fn failure(error: &ApiError) -> CallToolResult {
    let value = json!({"error": {"code": error.code, "message": error.message}});
    let mut result = CallToolResult::structured_error(value);
    result.content = vec![ContentBlock::text(format!(
        "{} ({})",
        error.message, error.code
    ))];
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tool_has_an_object_schema_and_annotations() {
        let tools = list();
        let names: Vec<_> = tools.iter().map(|t| t.name.as_ref()).collect();
        assert_eq!(
            names,
            [
                "start_task",
                "get_task_status",
                "stream_task",
                "resume_task",
                "cancel_task",
                "list_tasks",
                "verify_task",
                "run_task"
            ]
        );
        for tool in tools {
            assert_eq!(tool.input_schema["type"], "object", "{}", tool.name);
            assert!(tool.annotations.is_some(), "{}", tool.name);
        }
        let stream = &tools[2].input_schema;
        assert_eq!(stream["required"], json!(["task_id"]));
        assert_eq!(stream["properties"]["wait_s"]["default"], 25);
    }

    #[test]
    fn bad_arguments_say_how_to_fix_the_call() {
        let mut args = JsonObject::new();
        args.insert("task_id".into(), json!(7));
        let error = parse::<TaskArgs>("cancel_task", Some(args)).expect_err("a number");
        assert_eq!(error.code, "invalid_arguments");
        assert!(error.message.contains("cancel_task"), "{}", error.message);
        assert!(task_id("nope").is_err());
    }
}
