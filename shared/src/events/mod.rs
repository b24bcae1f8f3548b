//! Events: what happens to a task, as the domain sees it (`TaskEvent`) and on the wire.

pub mod wire;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Something that happened to a task; the `kind` and `payload` of a log event (§3.1).
/// Serialized adjacently tagged: `{"kind":"stdout","payload":{"line":"hi"}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "kind",
    content = "payload",
    rename_all = "snake_case",
    deny_unknown_fields
)]
pub enum TaskEvent {
    /// The task was accepted.
    Requested {
        /// The client's name for the task.
        name: String,
        /// The adapter that runs it.
        adapter: String,
        /// The adapter's arguments.
        args: Value,
        /// Seconds the task may run before it ends in `timeout`.
        timeout_s: Option<u32>,
    },
    /// A worker started an attempt.
    Started {
        /// The worker running the attempt.
        worker_id: String,
        /// 1 for the first run, then one more for each run after a lost worker.
        attempt: u32,
    },
    /// The adapter reported progress.
    Progress {
        /// What the adapter is doing.
        message: String,
        /// How far along, 0–100.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        percent: Option<u8>,
    },
    /// A line of standard output.
    Stdout {
        /// The line, without its newline.
        line: String,
    },
    /// A line of standard error.
    Stderr {
        /// The line, without its newline.
        line: String,
    },
    /// Someone asked for the task to stop.
    CancelRequested {},
    /// The task finished successfully (terminal).
    Succeeded {
        /// The adapter's result.
        result: Value,
    },
    /// The task failed (terminal).
    Failed {
        /// What went wrong.
        error: String,
        /// The exit code, for process adapters.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exit_code: Option<i32>,
    },
    /// The task was stopped on request (terminal).
    Canceled {},
    /// The task ran past its `timeout_s` (terminal).
    Timeout {},
}

/// The `kind` of a log event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// See [`TaskEvent::Requested`].
    Requested,
    /// See [`TaskEvent::Started`].
    Started,
    /// See [`TaskEvent::Progress`].
    Progress,
    /// See [`TaskEvent::Stdout`].
    Stdout,
    /// See [`TaskEvent::Stderr`].
    Stderr,
    /// See [`TaskEvent::CancelRequested`].
    CancelRequested,
    /// See [`TaskEvent::Succeeded`].
    Succeeded,
    /// See [`TaskEvent::Failed`].
    Failed,
    /// See [`TaskEvent::Canceled`].
    Canceled,
    /// See [`TaskEvent::Timeout`].
    Timeout,
}

impl EventKind {
    /// The snake_case name used in subjects, SSE `event:` lines and Redis fields.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Requested => "requested",
            Self::Started => "started",
            Self::Progress => "progress",
            Self::Stdout => "stdout",
            Self::Stderr => "stderr",
            Self::CancelRequested => "cancel_requested",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Canceled => "canceled",
            Self::Timeout => "timeout",
        }
    }

    /// True for the kinds that end a task; nothing follows them.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Succeeded | Self::Failed | Self::Canceled | Self::Timeout
        )
    }
}

impl TaskEvent {
    /// This event's kind.
    pub fn kind(&self) -> EventKind {
        match self {
            Self::Requested { .. } => EventKind::Requested,
            Self::Started { .. } => EventKind::Started,
            Self::Progress { .. } => EventKind::Progress,
            Self::Stdout { .. } => EventKind::Stdout,
            Self::Stderr { .. } => EventKind::Stderr,
            Self::CancelRequested {} => EventKind::CancelRequested,
            Self::Succeeded { .. } => EventKind::Succeeded,
            Self::Failed { .. } => EventKind::Failed,
            Self::Canceled {} => EventKind::Canceled,
            Self::Timeout {} => EventKind::Timeout,
        }
    }

    /// This event's `payload` object.
    pub fn payload(&self) -> Value {
        serde_json::to_value(self)
            .ok()
            .and_then(|mut tagged| tagged.get_mut("payload").map(Value::take))
            .unwrap_or_default()
    }
}

impl cqrs_es::DomainEvent for TaskEvent {
    fn event_type(&self) -> String {
        self.kind().as_str().to_owned()
    }

    fn event_version(&self) -> String {
        "1".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn payloads_match_the_contract() {
        let progress = TaskEvent::Progress {
            message: "step 1/5".into(),
            percent: Some(20),
        };
        assert_eq!(
            progress.payload(),
            json!({"message": "step 1/5", "percent": 20})
        );
        assert_eq!(TaskEvent::Canceled {}.payload(), json!({}));
        let failed = TaskEvent::Failed {
            error: "exit code 3".into(),
            exit_code: Some(3),
        };
        assert_eq!(
            failed.payload(),
            json!({"error": "exit code 3", "exit_code": 3})
        );
        assert_eq!(failed.kind().as_str(), "failed");
        assert!(failed.kind().is_terminal());
    }

    #[test]
    fn parses_kind_and_payload() {
        let event: TaskEvent =
            serde_json::from_value(json!({"kind": "stdout", "payload": {"line": "hi"}}))
                .expect("valid event");
        assert_eq!(event, TaskEvent::Stdout { line: "hi".into() });
        let unknown =
            serde_json::from_value::<TaskEvent>(json!({"kind": "exploded", "payload": {}}));
        assert!(unknown.is_err());
    }
}
