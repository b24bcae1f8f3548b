//! One attempt at a task: from a start command to its acked terminal event.

use std::future::pending;
use std::sync::PoisonError;
use std::time::Duration;

use async_nats::jetstream::message::Acker;
use async_nats::jetstream::{AckKind, Message};
use futures::StreamExt;
use serde::de::IgnoredAny;
use shared::adapters::{self, AdapterArgs};
use shared::events::wire::{CancelCommand, StartCommand};
use shared::events::{EventKind, TaskEvent};
use shared::ids::TaskId;
use shared::names;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::Env;
use crate::adapters::Outcome;
use crate::emitter::{Emitter, ShuttingDown};

/// What becomes of the start command.
enum Verdict {
    /// Log this terminal event, then ack the command.
    End(TaskEvent),
    /// Give the command back for another worker (shutdown, or NATS trouble).
    HandBack,
    /// An earlier attempt already stored a terminal event: ack without running again.
    AlreadyEnded,
}

/// Why the adapter was asked to stop.
#[derive(Clone, Copy, PartialEq)]
enum Stop {
    Cancel,
    Timeout,
    Shutdown,
}

/// This process's claim on running a task, released on drop.
struct Running {
    env: Env,
    task_id: TaskId,
}

impl Running {
    fn claim(env: &Env, task_id: TaskId) -> Option<Self> {
        let mut running = env.running.lock().unwrap_or_else(PoisonError::into_inner);
        running.insert(task_id).then(|| Self {
            env: env.clone(),
            task_id,
        })
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let mut running = self
            .env
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        running.remove(&self.task_id);
    }
}

/// Runs the attempt that `message` (a start command) stands for.
pub(crate) async fn run(env: Env, message: Message, shutdown: CancellationToken) {
    let attempt = match message.info() {
        Ok(info) => u32::try_from(info.delivered).unwrap_or(u32::MAX),
        Err(e) => {
            tracing::error!(error = %e, "start command without delivery info; terminating it");
            let _ = message.ack_with(AckKind::Term).await;
            return;
        }
    };
    let (message, acker) = message.split();
    let start: StartCommand = match serde_json::from_slice(&message.payload) {
        Ok(start) => start,
        Err(e) => {
            tracing::error!(subject = %message.subject, error = %e, "malformed start command; terminating it");
            let _ = acker.ack_with(AckKind::Term).await;
            return;
        }
    };
    let Some(running) = Running::claim(&env, start.task_id) else {
        tracing::warn!(task_id = %start.task_id, attempt, "redelivered while still running here; ignored");
        let _ = acker.ack_with(AckKind::Progress).await;
        return;
    };
    let emitter = Emitter::new(
        env.js.clone(),
        start.task_id,
        start.tenant_id,
        attempt,
        env.acks.clone(),
        shutdown.clone(),
    );
    let verdict = decide(&env, &start, attempt, &emitter, &acker, &shutdown).await;
    let acked = match verdict {
        Ok(Verdict::End(terminal)) => {
            let stored = match emitter.emit(terminal).await {
                Ok(()) => emitter.flush().await,
                Err(e) => Err(e),
            };
            stored.is_ok() && acker.double_ack().await.is_ok()
        }
        Ok(Verdict::AlreadyEnded) => acker.double_ack().await.is_ok(),
        Ok(Verdict::HandBack) | Err(ShuttingDown) => false,
    };
    // Released first, so a handed-back command may come straight back to this worker.
    drop(running);
    if !acked {
        let _ = acker.ack_with(AckKind::Nak(None)).await;
    }
    tracing::debug!(task_id = %start.task_id, attempt, acked, "attempt over");
}

/// Decides what becomes of the command: checks, then runs the task.
async fn decide(
    env: &Env,
    start: &StartCommand,
    attempt: u32,
    emitter: &Emitter,
    acker: &Acker,
    shutdown: &CancellationToken,
) -> Result<Verdict, ShuttingDown> {
    let cancel_subject = names::cancel_subject(start.tenant_id, start.task_id);
    // Subscribe before looking for an earlier cancel, so none slips between the two.
    let cancels = match env.client.subscribe(cancel_subject).await {
        Ok(subscription) => subscription,
        Err(e) => {
            tracing::warn!(error = %e, "cannot subscribe to cancels; handing the task back");
            return Ok(Verdict::HandBack);
        }
    };
    let args = match preflight(env, start, attempt).await {
        Ok(args) => args,
        Err(verdict) => return Ok(verdict),
    };
    emitter
        .emit(TaskEvent::Started {
            worker_id: env.settings.worker_id.clone(),
            attempt,
        })
        .await?;
    let deadline = deadline(env, start, attempt).await;
    let cancels = Cancels {
        live: cancels,
        subject: names::cancel_subject(start.tenant_id, start.task_id),
    };
    supervise(env, args, deadline, emitter, acker, cancels, shutdown).await
}

/// When the task times out: `timeout_s` after its first attempt started, so a retried
/// attempt keeps the task's original deadline.
async fn deadline(env: &Env, start: &StartCommand, attempt: u32) -> Option<Instant> {
    let timeout = Duration::from_secs(u64::from(start.timeout_s?));
    if attempt <= 1 {
        return Some(Instant::now() + timeout);
    }
    /// The part of a `started` event the deadline needs.
    #[derive(serde::Deserialize)]
    struct Stamp {
        ts: String,
    }
    let subject = names::event_subject(start.tenant_id, start.task_id, EventKind::Started);
    let first = shared::nats::first_on_subject::<Stamp>(&env.axon, subject).await;
    let spent = match first {
        Ok(Some(stamp)) => shared::time::age(&stamp.ts),
        Ok(None) => None,
        Err(e) => {
            tracing::warn!(task_id = %start.task_id, error = %e, "first start unknown; the timeout counts from now");
            None
        }
    };
    Some(Instant::now() + timeout.saturating_sub(spent.unwrap_or_default()))
}

/// Runs the adapter while keeping the command in progress, until it ends, a cancel
/// arrives, the timeout passes or the worker shuts down.
async fn supervise(
    env: &Env,
    args: AdapterArgs,
    deadline: Option<Instant>,
    emitter: &Emitter,
    acker: &Acker,
    mut cancels: Cancels,
    shutdown: &CancellationToken,
) -> Result<Verdict, ShuttingDown> {
    let tuning = &env.settings.tuning;
    let stop = CancellationToken::new();
    let mut heartbeat = tokio::time::interval(tuning.ack_wait / 3);
    let mut timeout = std::pin::pin!(async move {
        match deadline {
            Some(deadline) => tokio::time::sleep_until(deadline).await,
            None => pending().await,
        }
    });
    let mut adapter = std::pin::pin!(crate::adapters::run(
        args,
        emitter,
        stop.clone(),
        tuning.kill_grace
    ));
    let mut reason = None;
    let outcome = loop {
        tokio::select! {
            outcome = &mut adapter => break outcome?,
            _ = heartbeat.tick() => {
                if let Err(e) = acker.ack_with(AckKind::Progress).await {
                    tracing::warn!(error = %e, "in-progress ack failed");
                }
                // The live subscription is at most once: a cancel it missed (a reconnect)
                // is still stored, and found here.
                if reason.is_none() && cancel_stored(env, &cancels.subject).await {
                    reason = Some(Stop::Cancel);
                }
            }
            Some(_) = cancels.live.next(), if reason.is_none() => reason = Some(Stop::Cancel),
            () = &mut timeout, if reason.is_none() => reason = Some(Stop::Timeout),
            () = shutdown.cancelled(), if reason.is_none() => reason = Some(Stop::Shutdown),
        }
        if reason.is_some() {
            stop.cancel();
        }
    };
    Ok(match (outcome, reason) {
        (Outcome::Finished(terminal), _) => Verdict::End(terminal),
        (Outcome::Stopped, Some(Stop::Cancel)) => Verdict::End(TaskEvent::Canceled {}),
        (Outcome::Stopped, Some(Stop::Timeout)) => Verdict::End(TaskEvent::Timeout {}),
        (Outcome::Stopped, _) => Verdict::HandBack,
    })
}

/// How a running attempt hears of a cancel: live, and from the stored commands.
struct Cancels {
    /// The subscription to the task's cancel subject (at most once).
    live: async_nats::Subscriber,
    /// That subject, to look the cancel up in `AXON`.
    subject: String,
}

/// Whether a cancel command for the task is stored in `AXON` (`subject` is its subject).
async fn cancel_stored(env: &Env, subject: &str) -> bool {
    match shared::nats::last_on_subject::<CancelCommand>(&env.axon, subject.to_owned()).await {
        Ok(found) => found.is_some(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot look for a stored cancel; the live one still counts");
            false
        }
    }
}

/// The checks before a run: an earlier end, a cancel, the attempt limit, the adapter.
/// Returns the adapter's arguments, or the verdict that makes running needless.
async fn preflight(env: &Env, start: &StartCommand, attempt: u32) -> Result<AdapterArgs, Verdict> {
    let cancel_subject = names::cancel_subject(start.tenant_id, start.task_id);
    match already_ended(env, start).await {
        Ok(true) => return Err(Verdict::AlreadyEnded),
        Ok(false) => {}
        Err(e) => {
            tracing::warn!(error = %e, "cannot look for an earlier end; handing the task back");
            return Err(Verdict::HandBack);
        }
    }
    match shared::nats::last_on_subject::<CancelCommand>(&env.axon, cancel_subject).await {
        Ok(Some(_)) => return Err(Verdict::End(TaskEvent::Canceled {})),
        Ok(None) => {}
        Err(e) => {
            tracing::warn!(error = %e, "cannot look for cancels; handing the task back");
            return Err(Verdict::HandBack);
        }
    }
    if attempt > start.max_attempts {
        return Err(Verdict::End(TaskEvent::Failed {
            error: format!(
                "every worker that ran this task was lost before it finished ({} attempts; TASK_MAX_ATTEMPTS is {})",
                attempt - 1,
                start.max_attempts
            ),
            exit_code: None,
        }));
    }
    if !env.settings.adapters_enabled.contains(&start.adapter) {
        return Err(Verdict::End(TaskEvent::Failed {
            error: format!(
                "adapter '{}' is not enabled on this worker; the operator enables it with ADAPTERS_ENABLED",
                start.adapter
            ),
            exit_code: None,
        }));
    }
    adapters::parse(&start.adapter, &start.args).map_err(|error| {
        Verdict::End(TaskEvent::Failed {
            error,
            exit_code: None,
        })
    })
}

/// Whether a worker already stored a terminal event for the task (it then died, or its
/// ack was lost, before the start command was acked).
async fn already_ended(env: &Env, start: &StartCommand) -> Result<bool, shared::nats::Error> {
    let terminal = [
        EventKind::Succeeded,
        EventKind::Failed,
        EventKind::Canceled,
        EventKind::Timeout,
    ];
    for kind in terminal {
        let subject = names::event_subject(start.tenant_id, start.task_id, kind);
        if shared::nats::last_on_subject::<IgnoredAny>(&env.axon, subject)
            .await?
            .is_some()
        {
            return Ok(true);
        }
    }
    Ok(false)
}
