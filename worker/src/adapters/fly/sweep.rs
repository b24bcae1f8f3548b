//! Machines a dead worker left behind, in the apps of `FLY_APPS`: a worker starting
//! destroys every Machine whose attempt `AXON` shows over (a later start, or a stored
//! end), as the docker adapter's sweep does with containers. A Machine whose attempt may
//! still run on another worker stays: if that worker is dead, the task's next attempt
//! destroys it.

use async_nats::jetstream::stream::Stream;
use shared::ids::{TaskId, TenantId};

use super::api::{Api, Machine};
use crate::stored;

/// Metadata key naming the Machine's task.
pub const TASK: &str = "axontask_task_id";
/// Metadata key naming the task's tenant.
pub const TENANT: &str = "axontask_tenant_id";
/// Metadata key naming the Machine's attempt.
pub const ATTEMPT: &str = "axontask_attempt";

/// Destroys the Machines of finished attempts in every allowed app; returns how many.
pub async fn finished_attempts(api: &Api, axon: &Stream) -> usize {
    let mut destroyed = 0;
    for app in api.apps() {
        let machines = match api.list(app).await {
            Ok(machines) => machines,
            Err(e) => {
                tracing::warn!(app, error = %e, "cannot look for Machines left by stopped workers");
                continue;
            }
        };
        for (machine, (task_id, tenant_id, attempt)) in machines
            .iter()
            .filter(|m| m.state != "destroyed")
            .filter_map(|m| Some((m, run_of(m)?)))
        {
            let over = stored::attempt_over(axon, tenant_id, task_id, attempt).await;
            match over {
                Ok(true) => match api.destroy(app, &machine.id).await {
                    Ok(()) => destroyed += 1,
                    Err(e) => {
                        tracing::warn!(%task_id, error = %e, "cannot destroy a finished attempt's Machine")
                    }
                },
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(%task_id, error = %e, "cannot tell whether a Machine's attempt is over; it stays");
                }
            }
        }
    }
    destroyed
}

/// The run a Machine's metadata names, if the adapter made it.
fn run_of(machine: &Machine) -> Option<(TaskId, TenantId, u32)> {
    let metadata = &machine.config["metadata"];
    let field = |key: &str| metadata[key].as_str();
    Some((
        TaskId(field(TASK)?.parse().ok()?),
        TenantId(field(TENANT)?.parse().ok()?),
        field(ATTEMPT)?.parse().ok()?,
    ))
}
