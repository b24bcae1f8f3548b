//! Names of NATS streams, subjects and consumers, and Redis keys (§3.4, §3.5).

use crate::events::EventKind;
use crate::ids::{TaskId, TenantId};

/// The stream of commands and worker events.
pub const STREAM_AXON: &str = "AXON";
/// The stream of chained log events, for other services.
pub const STREAM_AXON_LOG: &str = "AXON_LOG";
/// Subjects of stream `AXON`.
pub const AXON_SUBJECTS: [&str; 2] = ["axon.cmd.>", "axon.evt.>"];
/// Subjects of stream `AXON_LOG`.
pub const AXON_LOG_SUBJECTS: [&str; 1] = ["axon.log.>"];
/// The stream of signed tree heads.
pub const STREAM_AXON_HEADS: &str = "AXON_HEADS";
/// Subjects of stream `AXON_HEADS`.
pub const AXON_HEADS_SUBJECTS: [&str; 1] = ["axon.loghead.>"];

/// Where command-api publishes a start command.
pub fn start_subject(tenant: TenantId, task: TaskId) -> String {
    format!("axon.cmd.{tenant}.{task}.start")
}

/// Where command-api publishes a cancel command.
pub fn cancel_subject(tenant: TenantId, task: TaskId) -> String {
    format!("axon.cmd.{tenant}.{task}.cancel")
}

/// Where a worker publishes an event.
pub fn event_subject(tenant: TenantId, task: TaskId, kind: EventKind) -> String {
    format!("axon.evt.{tenant}.{task}.{}", kind.as_str())
}

/// Where the projector publishes a chained event.
pub fn log_subject(tenant: TenantId, task: TaskId, kind: EventKind) -> String {
    format!("axon.log.{tenant}.{task}.{}", kind.as_str())
}

/// Where the projector publishes a tenant's signed tree heads.
pub fn loghead_subject(tenant: TenantId) -> String {
    format!("axon.loghead.{tenant}")
}

/// `Nats-Msg-Id` of a chained event in `AXON_LOG`.
pub fn log_msg_id(task: TaskId, seq: u64) -> String {
    format!("{task}:{seq}")
}

/// The Redis Stream of a task's chained events; entry ids are `{seq}-0`.
pub fn events_key(task: TaskId) -> String {
    format!("events:{task}")
}
