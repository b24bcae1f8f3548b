//! Containers a dead worker left behind. A run removes its task's containers of earlier
//! attempts before making its own; a worker starting removes every container whose
//! attempt is over (its task ended, or a later attempt started). A container whose attempt
//! may still be running on another worker stays: if that worker is dead, the task's next
//! attempt removes it.

use async_nats::jetstream::stream::Stream;
use shared::ids::TaskId;

use super::engine::Engine;
use crate::stored;

/// Removes `task_id`'s containers of attempts before `attempt` (this run holds the task).
pub async fn earlier_attempts(engine: &Engine, task_id: TaskId, attempt: u32) {
    let runs = match engine.runs(Some(task_id)).await {
        Ok(runs) => runs,
        Err(e) => {
            tracing::warn!(%task_id, error = %e, "cannot look for earlier attempts' containers");
            return;
        }
    };
    for run in runs.into_iter().filter(|run| run.attempt < attempt) {
        match engine.remove(&run.id).await {
            Ok(()) => {
                tracing::info!(%task_id, attempt = run.attempt, "removed an earlier attempt's container");
            }
            Err(e) => {
                tracing::warn!(%task_id, error = %e, "cannot remove an earlier attempt's container")
            }
        }
    }
}

/// Removes the containers of attempts that are over, as `AXON` tells; returns how many.
pub async fn finished_attempts(engine: &Engine, axon: &Stream) -> usize {
    let runs = match engine.runs(None).await {
        Ok(runs) => runs,
        Err(e) => {
            tracing::warn!(error = %e, "cannot look for containers left by stopped workers");
            return 0;
        }
    };
    let mut removed = 0;
    for run in runs {
        let over = stored::attempt_over(axon, run.tenant_id, run.task_id, run.attempt).await;
        match over {
            Ok(true) => match engine.remove(&run.id).await {
                Ok(()) => removed += 1,
                Err(e) => {
                    tracing::warn!(task_id = %run.task_id, error = %e, "cannot remove a finished attempt's container")
                }
            },
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(task_id = %run.task_id, error = %e, "cannot tell whether a container's attempt is over; it stays");
            }
        }
    }
    removed
}
