//! Turns an AXON message into a command for the task aggregate.

use shared::events::wire::{CancelCommand, StartCommand, WorkerEvent};
use shared::ids::{TaskId, TenantId};
use shared::task::TaskCommand;

/// A decoded AXON message.
#[derive(Debug)]
pub struct Input {
    /// The task it is about.
    pub task_id: TaskId,
    /// The task's tenant.
    pub tenant_id: TenantId,
    /// When it happened (stamped by command-api or the worker).
    pub ts: String,
    /// What it asks of the task.
    pub command: TaskCommand,
    /// The idempotency key of a start command.
    pub idempotency_key: Option<String>,
}

/// Why a message cannot be projected (it is skipped and counted).
#[derive(Debug, thiserror::Error)]
#[error("cannot project {subject}: {reason}")]
pub struct Poison {
    /// The message's subject.
    pub subject: String,
    /// What is wrong with it.
    pub reason: String,
}

/// Decodes by subject: `axon.cmd.*.*.start|cancel` or `axon.evt.*.*.{kind}`.
pub fn decode(subject: &str, payload: &[u8]) -> Result<Input, Poison> {
    let poison = |reason: String| Poison {
        subject: subject.to_owned(),
        reason,
    };
    let parts: Vec<&str> = subject.split('.').collect();
    let input = match parts.as_slice() {
        ["axon", "cmd", _, _, "start"] => {
            let start: StartCommand =
                serde_json::from_slice(payload).map_err(|e| poison(e.to_string()))?;
            Input {
                task_id: start.task_id,
                tenant_id: start.tenant_id,
                ts: start.ts,
                idempotency_key: start.idempotency_key,
                command: TaskCommand::Request {
                    name: start.name,
                    adapter: start.adapter,
                    args: start.args,
                    timeout_s: start.timeout_s,
                },
            }
        }
        ["axon", "cmd", _, _, "cancel"] => {
            let cancel: CancelCommand =
                serde_json::from_slice(payload).map_err(|e| poison(e.to_string()))?;
            Input {
                task_id: cancel.task_id,
                tenant_id: cancel.tenant_id,
                ts: cancel.ts,
                idempotency_key: None,
                command: TaskCommand::Cancel,
            }
        }
        ["axon", "evt", _, _, _] => {
            let event: WorkerEvent =
                serde_json::from_slice(payload).map_err(|e| poison(e.to_string()))?;
            Input {
                task_id: event.task_id,
                tenant_id: event.tenant_id,
                ts: event.ts,
                idempotency_key: None,
                command: TaskCommand::Report {
                    attempt: event.attempt,
                    event: event.event,
                },
            }
        }
        _ => return Err(poison("unknown subject".into())),
    };
    let expected = [input.tenant_id.to_string(), input.task_id.to_string()];
    if parts[2..4] != [expected[0].as_str(), expected[1].as_str()] {
        return Err(poison("subject and payload name different tasks".into()));
    }
    if shared::time::parse_ts(&input.ts).is_none() {
        return Err(poison(format!("ts '{}' is not RFC 3339", input.ts)));
    }
    Ok(input)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn subject_must_match_payload() {
        let task = TaskId::new();
        let tenant = TenantId(uuid::Uuid::now_v7());
        let payload =
            json!({"task_id": task, "tenant_id": tenant, "ts": "2026-11-27T07:19:16.123456Z"});
        let bytes = serde_json::to_vec(&payload).expect("json");
        let ok = decode(&format!("axon.cmd.{tenant}.{task}.cancel"), &bytes).expect("valid");
        assert_eq!(ok.command, TaskCommand::Cancel);
        let other = TaskId::new();
        assert!(decode(&format!("axon.cmd.{tenant}.{other}.cancel"), &bytes).is_err());
        assert!(decode("axon.nope", &bytes).is_err());
        assert!(decode(&format!("axon.cmd.{tenant}.{task}.cancel"), b"{").is_err());
    }
}
