//! `POST /mcp/start_task` and `POST /mcp/tasks/{id}/cancel`.

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::{HeaderMap, header};
use axum::extract::State as Extract;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use shared::auth::{Principal, Scope};
use shared::events::wire::{CancelCommand, StartCommand};
use shared::http::{ApiError, Caller, Json, TaskPath};
use shared::ids::{TaskId, TenantId};
use shared::task::TaskState;
use shared::{adapters, names, queue, resume};

use crate::{Settings, State};

/// Longest accepted `name`.
const MAX_NAME: usize = 200;
/// Longest accepted `idempotency_key`.
const MAX_KEY: usize = 255;

/// The body of `start_task`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartTask {
    /// The client's name for the task.
    pub name: String,
    /// The adapter to run it with.
    pub adapter: String,
    /// The adapter's arguments (a JSON object).
    #[serde(default = "empty_object")]
    pub args: Value,
    /// Seconds before the task ends in `timeout`.
    pub timeout_s: Option<u32>,
    /// Makes a retried start one task.
    pub idempotency_key: Option<String>,
    /// 0 to 9 (default 4): among this tenant's waiting tasks, higher runs sooner.
    pub priority: Option<u8>,
    /// At the plan's concurrency, wait in the queue instead of a 429.
    #[serde(default)]
    pub queue_if_busy: bool,
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

/// The answer of `start_task`.
#[derive(Debug, Clone, Serialize)]
pub struct Started {
    /// The task's id.
    pub task_id: TaskId,
    /// Where its SSE stream is.
    pub stream_url: String,
    /// A capability for that one stream.
    pub resume_token: String,
}

/// Checks a start request against the operator's settings.
fn validate(body: &StartTask, settings: &Settings) -> Result<(), ApiError> {
    let enabled = &settings.adapters_enabled;
    let name_len = body.name.chars().count();
    if body.name.trim().is_empty() || name_len > MAX_NAME || body.name.contains('\0') {
        return Err(ApiError::bad_request(
            "invalid_name",
            format!("name must be 1 to {MAX_NAME} characters, without NUL"),
        ));
    }
    if !shared::config::KNOWN_ADAPTERS.contains(&body.adapter.as_str()) {
        return Err(ApiError::bad_request(
            "unknown_adapter",
            format!(
                "no adapter named '{}'; this server has {} (enabled by ADAPTERS_ENABLED: {})",
                body.adapter,
                shared::config::KNOWN_ADAPTERS.join(", "),
                enabled.join(", ")
            ),
        ));
    }
    if !enabled.contains(&body.adapter) {
        return Err(ApiError::bad_request(
            "adapter_disabled",
            format!(
                "adapter '{}' is not enabled on this server; the operator enables it by adding it to ADAPTERS_ENABLED (now: {})",
                body.adapter,
                enabled.join(", ")
            ),
        ));
    }
    if !body.args.is_object() {
        return Err(ApiError::bad_request(
            "invalid_args",
            "args must be a JSON object",
        ));
    }
    let parsed = adapters::parse(&body.adapter, &body.args)
        .map_err(|e| ApiError::bad_request("invalid_args", e))?;
    if let adapters::AdapterArgs::Fly(fly) = &parsed
        && !settings.fly_apps.contains(&fly.app)
    {
        return Err(ApiError::bad_request(
            "invalid_args",
            format!(
                "fly args: app '{}' is not one fly tasks may use; the operator lists them in FLY_APPS (now: {})",
                fly.app,
                settings.fly_apps.join(", ")
            ),
        ));
    }
    if body
        .timeout_s
        .is_some_and(|t| t == 0 || t > settings.max_timeout_s)
    {
        return Err(ApiError::bad_request(
            "invalid_timeout",
            format!(
                "timeout_s must be between 1 and {} seconds (the operator's TASK_MAX_TIMEOUT_S)",
                settings.max_timeout_s
            ),
        ));
    }
    if body.priority.is_some_and(|p| p > queue::MAX_PRIORITY) {
        return Err(ApiError::bad_request(
            "invalid_priority",
            format!(
                "priority must be 0 to {} (higher runs sooner; default {})",
                queue::MAX_PRIORITY,
                queue::DEFAULT_PRIORITY
            ),
        ));
    }
    if body
        .idempotency_key
        .as_ref()
        .is_some_and(|k| k.is_empty() || k.len() > MAX_KEY || k.contains('\0'))
    {
        return Err(ApiError::bad_request(
            "invalid_idempotency_key",
            format!("idempotency_key must be 1 to {MAX_KEY} bytes, without NUL"),
        ));
    }
    Ok(())
}

/// `POST /mcp/start_task`: publishes the start command and answers with the task id.
pub async fn start(
    Extract(state): Extract<State>,
    caller: Caller,
    Json(body): Json<StartTask>,
) -> Result<axum::Json<Started>, ApiError> {
    caller.tenant_for(Scope::TasksWrite)?;
    start_task(&state, &caller.0, body).await.map(axum::Json)
}

/// Starts a task for `caller` (who holds `tasks:write`): validates, publishes the start
/// command, and answers with the task id and a resume token bound to the caller's key.
pub async fn start_task(
    state: &State,
    caller: &Principal,
    body: StartTask,
) -> Result<Started, ApiError> {
    let tenant = caller.tenant_id;
    validate(&body, &state.settings)?;
    let task_id = match &body.idempotency_key {
        Some(key) => TaskId::from_idempotency_key(tenant, key),
        None => TaskId::new(),
    };
    let answer = Started {
        task_id,
        stream_url: format!("/mcp/tasks/{task_id}/stream"),
        resume_token: resume::issue(
            &state.settings.hmac_secret,
            caller.key_id,
            task_id,
            shared::time::unix_now() + state.settings.resume_token_ttl.as_secs(),
        ),
    };
    // A start older than AXON's retention: the projector has long recorded its task.
    if body.idempotency_key.is_some() && stored_state(state, tenant, task_id).await?.is_some() {
        return Ok(answer);
    }
    let admitted = match &state.quotas {
        Some(quotas) => {
            match quotas
                .admit(&state.axon, tenant, body.timeout_s, body.queue_if_busy)
                .await
            {
                Ok(admitted) => Some(admitted),
                // A retried start of a task that exists is no new task.
                Err(_)
                    if body.idempotency_key.is_some()
                        && start_exists(state, tenant, task_id).await? =>
                {
                    return Ok(answer);
                }
                Err(refused) => return Err(refused),
            }
        }
        None => None,
    };
    let (concurrency, max_timeout_s) = admitted
        .as_ref()
        .map_or((queue::UNLIMITED, state.settings.max_timeout_s), |a| {
            (a.limits.concurrency, a.limits.max_timeout_s)
        });
    let command = StartCommand {
        task_id,
        tenant_id: tenant,
        ts: shared::time::now_ts(),
        name: body.name,
        adapter: body.adapter,
        args: body.args,
        timeout_s: Some(
            body.timeout_s
                .unwrap_or(state.settings.default_timeout_s.min(max_timeout_s)),
        ),
        idempotency_key: body.idempotency_key,
        max_attempts: state.settings.max_attempts,
        priority: body.priority.unwrap_or(queue::DEFAULT_PRIORITY),
    };
    let published = publish_start(state, &command, concurrency).await;
    if let (Some(quotas), Some(admitted)) = (&state.quotas, &admitted)
        && !matches!(published, Ok(true))
    {
        quotas.give_back(admitted).await;
    }
    published.map(|_| answer)
}

/// Whether the task's start command is in `AXON`.
async fn start_exists(state: &State, tenant: TenantId, task_id: TaskId) -> Result<bool, ApiError> {
    shared::nats::last_on_subject::<StartCommand>(
        &state.axon,
        names::start_subject(tenant, task_id),
    )
    .await
    .map(|start| start.is_some())
    .map_err(|e| ApiError::unavailable("nats", e))
}

/// Publishes a start command, after making its tenant's queue; true if it was stored now
/// (false: the task's start was there already).
async fn publish_start(
    state: &State,
    command: &StartCommand,
    concurrency: u32,
) -> Result<bool, ApiError> {
    let (tenant, task_id) = (command.tenant_id, command.task_id);
    state
        .queues
        .ensure(&state.axon, tenant, state.settings.ack_wait, concurrency)
        .await?;
    let mut headers = command_headers(task_id.to_string(), Some(0));
    headers.insert(
        queue::PRIORITY_HEADER,
        command.priority.to_string().as_str(),
    );
    // Create-only: JetStream stores the start only if its subject (one per task) has none,
    // so a retry long after the dedup window, while the projector lags, is still one task.
    publish(
        state,
        names::start_subject(tenant, task_id),
        headers,
        command,
    )
    .await
}

/// `POST /mcp/tasks/{id}/cancel`: asks for the task to stop; idempotent.
pub async fn cancel(
    Extract(state): Extract<State>,
    caller: Caller,
    TaskPath(task_id): TaskPath,
) -> Result<axum::Json<Value>, ApiError> {
    let tenant = caller.tenant_for(Scope::TasksWrite)?;
    cancel_task(&state, tenant, task_id).await?;
    Ok(axum::Json(serde_json::json!({"canceled": true})))
}

/// Asks `tenant`'s task to stop (the caller holds `tasks:write`); idempotent. 404 for an
/// unknown or another tenant's task, 409 for one that already ended otherwise.
pub async fn cancel_task(state: &State, tenant: TenantId, task_id: TaskId) -> Result<(), ApiError> {
    match stored_state(state, tenant, task_id).await? {
        Some(TaskState::Canceled) => return Ok(()),
        Some(ended) if ended.is_terminal() => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "task_already_ended",
                format!(
                    "the task already ended as {}; there is nothing to cancel",
                    ended.as_str()
                ),
            ));
        }
        Some(_) => {}
        None => {
            if !start_exists(state, tenant, task_id).await? {
                return Err(ApiError::task_not_found(task_id));
            }
        }
    }
    let command = CancelCommand {
        task_id,
        tenant_id: tenant,
        ts: shared::time::now_ts(),
    };
    let headers = command_headers(format!("{task_id}:cancel"), None);
    publish(
        state,
        names::cancel_subject(tenant, task_id),
        headers,
        &command,
    )
    .await
    .map(drop)
}

/// The task's state in the read model, if the projector has recorded it.
async fn stored_state(
    state: &State,
    tenant: TenantId,
    task_id: TaskId,
) -> Result<Option<TaskState>, ApiError> {
    let row: Option<(String,)> =
        sqlx::query_as("SELECT state FROM tasks WHERE tenant_id = $1 AND task_id = $2")
            .bind(tenant.0)
            .bind(task_id.0)
            .fetch_optional(&state.pool)
            .await
            .map_err(|e| ApiError::unavailable("postgres", e))?;
    Ok(row.and_then(|(name,)| TaskState::parse(&name)))
}

/// A command's headers: deduplicated by `msg_id`; with `expected_last` JetStream stores
/// it only if that is the last sequence on its subject (0: none).
fn command_headers(msg_id: String, expected_last: Option<u64>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(header::NATS_MESSAGE_ID, msg_id.as_str());
    if let Some(last) = expected_last {
        headers.insert(
            header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
            last.to_string().as_str(),
        );
    }
    headers
}

/// Publishes a command and waits for JetStream to store it; true if it is new. A refusal
/// for the expected last sequence, or a duplicate, means the command is there already,
/// which is success too.
async fn publish<T: Serialize>(
    state: &State,
    subject: String,
    headers: HeaderMap,
    command: &T,
) -> Result<bool, ApiError> {
    let payload = serde_json::to_vec(command).map_err(|e| ApiError::unavailable("encoder", e))?;
    let ack = state
        .js
        .publish_with_headers(subject, headers, payload.into())
        .await
        .map_err(|e| ApiError::unavailable("nats", e))?;
    match ack.await {
        Ok(ack) => Ok(!ack.duplicate),
        Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => Ok(false),
        Err(e) => Err(ApiError::unavailable("nats", e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(adapter: &str, args: Value) -> StartTask {
        StartTask {
            name: "build".into(),
            adapter: adapter.into(),
            args,
            timeout_s: None,
            idempotency_key: None,
            priority: None,
            queue_if_busy: false,
        }
    }

    fn settings() -> Settings {
        Settings {
            adapters_enabled: vec!["mock".to_owned()],
            fly_apps: Vec::new(),
            hmac_secret: String::new(),
            resume_token_ttl: std::time::Duration::from_secs(60),
            max_attempts: 3,
            default_timeout_s: 60,
            max_timeout_s: 600,
            fast_password_hash: true,
            ack_wait: std::time::Duration::from_secs(30),
            webhooks: shared::config::WebhookConfig {
                allow_private: false,
                max_attempts: 8,
                retry_base: std::time::Duration::from_secs(1),
                timeout: std::time::Duration::from_secs(10),
            },
        }
    }

    #[test]
    fn adapters_must_be_known_and_enabled() {
        let enabled = settings();
        assert!(validate(&body("mock", json!({})), &enabled).is_ok());
        let unknown = validate(&body("teleport", json!({})), &enabled).expect_err("unknown");
        assert_eq!(unknown.code, "unknown_adapter");
        let disabled =
            validate(&body("shell", json!({"command": "ls"})), &enabled).expect_err("off");
        assert_eq!(disabled.code, "adapter_disabled");
        assert!(disabled.message.contains("ADAPTERS_ENABLED"));
    }

    #[test]
    fn limits() {
        let enabled = settings();
        let mut long = body("mock", json!({}));
        long.name = "x".repeat(MAX_NAME + 1);
        assert_eq!(
            validate(&long, &enabled).map_err(|e| e.code),
            Err("invalid_name")
        );
        let mut zero = body("mock", json!({}));
        zero.timeout_s = Some(0);
        assert_eq!(
            validate(&zero, &enabled).map_err(|e| e.code),
            Err("invalid_timeout")
        );
        let mut long_wait = body("mock", json!({}));
        long_wait.timeout_s = Some(601);
        let refused = validate(&long_wait, &enabled).expect_err("over the maximum");
        assert!(
            refused.message.contains("TASK_MAX_TIMEOUT_S"),
            "{}",
            refused.message
        );
        let not_object = body("mock", json!([1]));
        assert_eq!(
            validate(&not_object, &enabled).map_err(|e| e.code),
            Err("invalid_args")
        );
    }
}
