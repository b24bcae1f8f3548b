//! `fly`: runs the task as a Fly.io Machine made for it through the Machines API
//! ([`api`]): its state changes reported as `progress` (`created`, `started`, `stopped`…,
//! from the Machine's events, so a state passed between two looks is reported too),
//! its exit code as the end, as `shell` reports one. The Machines API offers no logs, so a
//! fly task has no output lines. Stop (cancel, timeout) stops the Machine (SIGTERM, SIGKILL
//! after the grace period); whatever happens, the Machine is destroyed at the end.
//!
//! A Machine's name holds its task and attempt; a run removes the Machines of its task's
//! earlier attempts (a worker died under them) before making its own, and a worker
//! starting removes those of attempts that are over ([`sweep`]).

pub mod api;
pub mod sweep;

use std::time::Duration;

use serde_json::{Value, json};
use shared::adapters::FlyArgs;
use shared::events::TaskEvent;
use shared::ids::{TaskId, TenantId};
use tokio_util::sync::CancellationToken;

use super::{Outcome, failed};
use crate::emitter::{Emitter, ShuttingDown};
use api::{Api, Machine};

/// How often a Machine not started (making, starting, stopping) is looked at.
const POLL: Duration = Duration::from_millis(300);

/// Runs the task's Machine through `api`.
pub async fn run(
    args: FlyArgs,
    out: &Emitter,
    stop: CancellationToken,
    kill_grace: Duration,
    api: &Api,
) -> Result<Outcome, ShuttingDown> {
    let (task_id, tenant_id, attempt) = out.attempt();
    // command-api checked it too, with its own FLY_APPS.
    if !api.allows(&args.app) {
        return Ok(failed(format!(
            "fly args: app '{}' is not one fly tasks may use on this worker (FLY_APPS)",
            args.app
        )));
    }
    earlier_attempts(api, &args.app, task_id, attempt).await;
    let name = machine_name(task_id, attempt);
    let config = machine_config(&args, (task_id, tenant_id, attempt));
    // Not cut short by a stop: a Machine made by a dropped request would never be
    // destroyed. A stop is seen at the first look at it.
    let machine = match api
        .create(&args.app, &name, args.region.as_deref(), config)
        .await
    {
        Ok(machine) => machine,
        Err(reason) => {
            // The API may have made it before the answer was lost.
            earlier_attempts(api, &args.app, task_id, attempt + 1).await;
            return Ok(failed(reason));
        }
    };
    let outcome = follow(api, &args.app, machine.clone(), out, &stop, kill_grace).await;
    if let Err(e) = api.destroy(&args.app, &machine.id).await {
        tracing::warn!(%task_id, machine = %machine.id, error = %e, "cannot destroy a finished Machine");
    }
    outcome
}

/// Reports the Machine's state changes until it stopped, then its exit; on stop, stops it.
async fn follow(
    api: &Api,
    app: &str,
    mut machine: Machine,
    out: &Emitter,
    stop: &CancellationToken,
    kill_grace: Duration,
) -> Result<Outcome, ShuttingDown> {
    let mut reported = report(&machine, i64::MIN, out).await?;
    loop {
        let looked = async {
            if machine.state == "started" {
                // Held by the API until the Machine stops (or a minute passes).
                api.wait(app, &machine, "stopped").await?;
            } else {
                tokio::time::sleep(POLL).await;
            }
            api.get(app, &machine.id).await
        };
        let Some(looked) = until_stop(stop, looked).await else {
            return Ok(stopped(api, app, &machine, kill_grace).await);
        };
        machine = match looked {
            Ok(machine) => machine,
            Err(reason) => return Ok(failed(reason)),
        };
        reported = report(&machine, reported, out).await?;
        match machine.state.as_str() {
            "stopped" | "suspended" => return Ok(exited(&machine)),
            "destroying" | "destroyed" => {
                return Ok(failed(format!(
                    "the Machine {} was destroyed before its process ended (from outside AxonTask)",
                    machine.id
                )));
            }
            _ => {}
        }
    }
}

/// Stops the Machine for a cancel or timeout.
async fn stopped(api: &Api, app: &str, machine: &Machine, kill_grace: Duration) -> Outcome {
    if let Err(e) = api.stop(app, &machine.id, kill_grace).await {
        tracing::warn!(machine = %machine.id, error = %e, "cannot stop the Machine; destroying it");
    }
    Outcome::Stopped
}

/// The end of a stopped Machine: its process's exit.
fn exited(machine: &Machine) -> Outcome {
    match machine.exit() {
        Some(exit) if exit.oom_killed => Outcome::Finished(TaskEvent::Failed {
            error: format!(
                "out of memory (the Machine's guest memory; raise config.guest.memory_mb): exit code {}",
                exit.exit_code
            ),
            exit_code: Some(exit.exit_code),
        }),
        Some(exit) => super::exited_with(exit.exit_code),
        None => failed(format!(
            "the Machine {} stopped without an exit code",
            machine.id
        )),
    }
}

/// Destroys the Machines of `task_id`'s attempts before `attempt` in `app` (with
/// `attempt + 1`, this run's own too).
async fn earlier_attempts(api: &Api, app: &str, task_id: TaskId, attempt: u32) {
    let prefix = format!("axontask-{task_id}-");
    let machines = match api.list(app).await {
        Ok(machines) => machines,
        Err(e) => {
            tracing::warn!(%task_id, error = %e, "cannot look for earlier attempts' Machines");
            return;
        }
    };
    let earlier = machines.into_iter().filter(|m| {
        m.name
            .strip_prefix(&prefix)
            .and_then(|n| n.parse::<u32>().ok())
            .is_some_and(|n| n < attempt)
    });
    for machine in earlier {
        if let Err(e) = api.destroy(app, &machine.id).await {
            tracing::warn!(%task_id, machine = %machine.id, error = %e, "cannot destroy an earlier attempt's Machine");
        }
    }
}

/// The Machine of attempt `attempt` of a task.
fn machine_name(task_id: TaskId, attempt: u32) -> String {
    format!("axontask-{task_id}-{attempt}")
}

/// The Machine's config: the task's own, with the image, no restarts (the task ends when
/// its process does) and the run in the metadata ([`sweep`] reads it).
fn machine_config(args: &FlyArgs, (task_id, tenant_id, attempt): (TaskId, TenantId, u32)) -> Value {
    let mut config = Value::Object(args.config.clone());
    config["image"] = json!(args.image);
    config["restart"] = json!({"policy": "no"});
    config["metadata"] = json!({
        sweep::TASK: task_id.to_string(),
        sweep::TENANT: tenant_id.to_string(),
        sweep::ATTEMPT: attempt.to_string(),
    });
    config
}

/// Reports the Machine's events after time `after` as `progress`, oldest first; the time
/// of the newest.
async fn report(machine: &Machine, after: i64, out: &Emitter) -> Result<i64, ShuttingDown> {
    let mut newer: Vec<_> = machine
        .events
        .iter()
        .filter(|e| e.timestamp > after && !e.status.is_empty())
        .collect();
    newer.sort_by_key(|e| e.timestamp);
    let mut newest = after;
    for event in newer {
        out.emit(TaskEvent::Progress {
            message: format!("machine {} {}", machine.id, event.status),
            percent: None,
        })
        .await?;
        newest = event.timestamp;
    }
    Ok(newest)
}

/// `future`'s result, or `None` once `stop` fired first.
async fn until_stop<T>(
    stop: &CancellationToken,
    future: impl std::future::Future<Output = T>,
) -> Option<T> {
    tokio::select! {
        result = future => Some(result),
        () = stop.cancelled() => None,
    }
}
