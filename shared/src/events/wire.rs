//! The JSON on the wire: the log envelope (§3.1) and the AXON stream's commands and worker
//! events. Never edit a shipped type here; add a new version beside it.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{EventKind, TaskEvent};
use crate::ids::{TaskId, TenantId};

/// A chained log event, the same object everywhere: SSE `data`, Redis field `data`,
/// `axon.log.*` payloads, NDJSON export. Field order is the documented one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// The task (UUID v7).
    pub task_id: TaskId,
    /// The task's tenant.
    pub tenant_id: TenantId,
    /// Per task, from 1, without gaps.
    pub seq: u64,
    /// When it happened, as stamped by the emitting process.
    pub ts: String,
    /// What happened.
    pub kind: EventKind,
    /// The kind's details.
    pub payload: Value,
    /// The previous event's `hash_curr`, or 64 zeros for `seq` 1.
    pub hash_prev: String,
    /// SHA-256 over the canonical JSON of this envelope without `hash_curr`.
    pub hash_curr: String,
}

/// `axon.cmd.{tenant}.{task}.start`: published by command-api, consumed by workers and the
/// projector. `Nats-Msg-Id` is the task id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StartCommand {
    /// The task to start.
    pub task_id: TaskId,
    /// Its tenant.
    pub tenant_id: TenantId,
    /// When command-api accepted it.
    pub ts: String,
    /// The client's name for the task.
    pub name: String,
    /// The adapter to run it with.
    pub adapter: String,
    /// The adapter's arguments.
    pub args: Value,
    /// Seconds before the task ends in `timeout`.
    pub timeout_s: Option<u32>,
    /// The client's idempotency key, when given.
    pub idempotency_key: Option<String>,
    /// How many times workers may run the task before it fails for lost workers.
    pub max_attempts: u32,
    /// 0 to 9, higher sooner among the tenant's waiting tasks (also in the
    /// `Axon-Priority` header, which workers read without parsing the command).
    #[serde(default = "default_priority")]
    pub priority: u8,
}

fn default_priority() -> u8 {
    crate::queue::DEFAULT_PRIORITY
}

/// `axon.cmd.{tenant}.{task}.cancel`: published by command-api.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CancelCommand {
    /// The task to cancel.
    pub task_id: TaskId,
    /// Its tenant.
    pub tenant_id: TenantId,
    /// When command-api accepted it.
    pub ts: String,
}

/// `axon.evt.{tenant}.{task}.{kind}`: an event a worker reports while running an attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerEvent {
    /// The task.
    pub task_id: TaskId,
    /// Its tenant.
    pub tenant_id: TenantId,
    /// The attempt this event belongs to.
    pub attempt: u32,
    /// When it happened, stamped by the worker.
    pub ts: String,
    /// What happened (`kind` and `payload`).
    #[serde(flatten)]
    pub event: TaskEvent,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn worker_event_is_flat() {
        let task_id = TaskId::new();
        let tenant_id = TenantId(uuid::Uuid::now_v7());
        let event = WorkerEvent {
            task_id,
            tenant_id,
            attempt: 2,
            ts: "2026-11-27T07:19:16.123456Z".into(),
            event: TaskEvent::Stdout { line: "hi".into() },
        };
        let json = serde_json::to_value(&event).expect("serializable");
        assert_eq!(json["kind"], "stdout");
        assert_eq!(json["payload"], json!({"line": "hi"}));
        let back: WorkerEvent = serde_json::from_value(json).expect("round trip");
        assert_eq!(back, event);
    }
}
