//! What `AXON` holds of a task's runs: its last start and whether it ended. Attempts read
//! it before they run; the docker and fly sweeps read it to tell what a finished run left
//! from what a live one holds.

use async_nats::jetstream::stream::Stream;
use serde::de::IgnoredAny;
use shared::events::EventKind;
use shared::events::wire::WorkerEvent;
use shared::ids::{TaskId, TenantId};
use shared::names;

/// The task's last stored start: its stream sequence (0 for none) and attempt (0 for none).
#[derive(Default)]
pub(crate) struct LastStart {
    pub seq: u64,
    pub attempt: u32,
}

/// Reads the task's last `started` event.
pub(crate) async fn last_start(
    axon: &Stream,
    tenant_id: TenantId,
    task_id: TaskId,
) -> Result<LastStart, shared::nats::Error> {
    let subject = names::event_subject(tenant_id, task_id, EventKind::Started);
    let last = shared::nats::last_on_subject_at::<WorkerEvent>(axon, subject).await?;
    Ok(
        last.map_or_else(LastStart::default, |(seq, report)| LastStart {
            seq,
            attempt: report.attempt,
        }),
    )
}

/// Whether a worker already stored a terminal event for the task (it then died, or its
/// ack was lost, before the start command was acked).
pub(crate) async fn ended(
    axon: &Stream,
    tenant_id: TenantId,
    task_id: TaskId,
) -> Result<bool, shared::nats::Error> {
    let terminal = [
        EventKind::Succeeded,
        EventKind::Failed,
        EventKind::Canceled,
        EventKind::Timeout,
    ];
    for kind in terminal {
        let subject = names::event_subject(tenant_id, task_id, kind);
        if shared::nats::last_on_subject::<IgnoredAny>(axon, subject)
            .await?
            .is_some()
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Whether attempt `attempt` of the task is over: a later attempt started, or the task
/// ended. What a run left behind (a container, a Machine) may then go.
pub(crate) async fn attempt_over(
    axon: &Stream,
    tenant_id: TenantId,
    task_id: TaskId,
    attempt: u32,
) -> Result<bool, shared::nats::Error> {
    if last_start(axon, tenant_id, task_id).await?.attempt > attempt {
        return Ok(true);
    }
    ended(axon, tenant_id, task_id).await
}
