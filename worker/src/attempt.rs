//! One attempt at a task: from a start command to its acked terminal event.

use std::future::pending;
use std::sync::PoisonError;
use std::time::Duration;

use async_nats::jetstream::message::Acker;
use async_nats::jetstream::{AckKind, Message};
use serde::de::IgnoredAny;
use shared::adapters::{self, AdapterArgs};
use shared::events::wire::{CancelCommand, StartCommand};
use shared::events::{EventKind, TaskEvent};
use shared::ids::TaskId;
use shared::names;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::adapters::Outcome;
use crate::emitter::{Attempt, Emitter, Limits, ShuttingDown, Taken};
use crate::stored::{self, LastStart};
use crate::{Env, cancels};

/// What becomes of the start command.
enum Verdict {
    /// Log this terminal event, then ack the command.
    End(TaskEvent),
    /// Give the command back for another worker (shutdown, or NATS trouble).
    HandBack,
    /// An earlier attempt already stored a terminal event: ack without running again.
    AlreadyEnded,
    /// A newer run claimed the task: leave the command to it (neither ack nor nak).
    Superseded,
    /// The guess that no attempt came before was wrong (the claim was refused): decide
    /// again from the task's stored start.
    Recheck,
}

/// What this run does with its start command in the end.
enum Settle {
    /// Ack it: the task ended.
    Ack,
    /// Neither ack nor nak: a newer run holds it.
    Leave,
    /// Nak it, for another worker.
    HandBack,
}

/// Why the adapter was asked to stop.
#[derive(Clone, Copy, PartialEq)]
enum Stop {
    Cancel,
    Timeout,
    Shutdown,
    Superseded,
    OverLimit,
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
    // A command delivered for the first time has no earlier attempt, almost surely: the
    // attempt starts without reading the task's last start and stored end (one lookup
    // instead of six), and the claim's guard proves the guess. Only a consumer made anew
    // delivers old commands as new; then the claim is refused and the attempt is decided
    // again from what is stored.
    let mut guess = message.info().is_ok_and(|info| info.delivered == 1);
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
        tracing::warn!(task_id = %start.task_id, "redelivered while still running here; ignored");
        let _ = acker.ack_with(AckKind::Progress).await;
        return;
    };
    let (emitter, verdict) = loop {
        let previous = if guess {
            LastStart::default()
        } else {
            match stored::last_start(&env.axon, start.tenant_id, start.task_id).await {
                Ok(previous) => previous,
                Err(e) => {
                    tracing::warn!(task_id = %start.task_id, error = %e, "cannot read the last start; handing the task back");
                    drop(running);
                    let _ = acker.ack_with(AckKind::Nak(None)).await;
                    return;
                }
            }
        };
        let emitter = emitter_for(&env, &start, &previous, &shutdown);
        let attempt = previous.attempt + 1;
        match decide(&env, &start, attempt, guess, &emitter, &acker, &shutdown).await {
            Ok(Verdict::Recheck) => guess = false,
            verdict => break (emitter, verdict),
        }
    };
    let settle = match verdict {
        Ok(Verdict::End(terminal)) => match emitter.finish(terminal).await {
            Ok(Ok(())) => Settle::Ack,
            Ok(Err(Taken)) => Settle::Leave,
            Err(ShuttingDown) => Settle::HandBack,
        },
        Ok(Verdict::AlreadyEnded) => Settle::Ack,
        Ok(Verdict::Superseded) => Settle::Leave,
        Ok(Verdict::HandBack | Verdict::Recheck) | Err(ShuttingDown) => Settle::HandBack,
    };
    let settled = match settle {
        // A lost ack redelivers the command, and the next run finds the stored end.
        Settle::Ack => acker.ack().await.is_ok(),
        // The newer run holds the command now.
        Settle::Leave => true,
        Settle::HandBack => false,
    };
    // Released first, so a handed-back command may come straight back to this worker.
    drop(running);
    if !settled {
        let _ = acker.ack_with(AckKind::Nak(None)).await;
    }
    tracing::debug!(task_id = %start.task_id, run = %emitter.run(), settled, "attempt over");
}

/// The event publisher of the attempt after `previous`.
fn emitter_for(
    env: &Env,
    start: &StartCommand,
    previous: &LastStart,
    shutdown: &CancellationToken,
) -> Emitter {
    Emitter::new(
        env.js.clone(),
        Attempt {
            task_id: start.task_id,
            tenant_id: start.tenant_id,
            number: previous.attempt + 1,
            previous: previous.seq,
        },
        Limits {
            max_events: env.settings.tuning.max_events,
            max_output_bytes: env.settings.tuning.max_output_bytes,
        },
        env.acks.clone(),
        shutdown.clone(),
    )
}

/// Decides what becomes of the command: checks, then runs the task.
async fn decide(
    env: &Env,
    start: &StartCommand,
    attempt: u32,
    guess: bool,
    emitter: &Emitter,
    acker: &Acker,
    shutdown: &CancellationToken,
) -> Result<Verdict, ShuttingDown> {
    // Listen before looking for an earlier cancel, so none slips between the two.
    let cancels = env.cancels.watch(start.task_id);
    let args = match preflight(env, start, attempt, guess).await {
        Ok(args) => args,
        Err(verdict) => return Ok(verdict),
    };
    let started = TaskEvent::Started {
        worker_id: env.settings.worker_id.clone(),
        attempt,
    };
    let Ok(own) = emitter.claim(started).await? else {
        if guess {
            return Ok(Verdict::Recheck);
        }
        tracing::warn!(task_id = %start.task_id, attempt, "another run started the task first; leaving it to that run");
        return Ok(Verdict::Superseded);
    };
    // On a retry, the previous run may have stored its end between the preflight and the
    // claim: then the task is over (the projector drops this run's start).
    if attempt > 1
        && stored::ended(&env.axon, start.tenant_id, start.task_id)
            .await
            .unwrap_or(false)
    {
        return Ok(Verdict::AlreadyEnded);
    }
    let deadline = deadline(env, start, attempt).await;
    let watch = Watch {
        task_id: start.task_id,
        cancels,
        cancel_subject: names::cancel_subject(start.tenant_id, start.task_id),
        started_subject: names::event_subject(start.tenant_id, start.task_id, EventKind::Started),
        own,
    };
    supervise(env, args, deadline, emitter, acker, watch, shutdown).await
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
    mut watch: Watch,
    shutdown: &CancellationToken,
) -> Result<Verdict, ShuttingDown> {
    let tuning = &env.settings.tuning;
    let stop = CancellationToken::new();
    let beat = tuning.ack_wait / 3;
    // The first beat a third of the ack wait in: most short tasks end before any.
    let mut heartbeat = tokio::time::interval_at(Instant::now() + beat, beat);
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
        tuning.kill_grace,
        &env.places,
    ));
    let mut reason = None;
    let outcome = loop {
        tokio::select! {
            outcome = &mut adapter => break outcome?,
            _ = heartbeat.tick() => {
                if let Err(e) = acker.ack_with(AckKind::Progress).await {
                    tracing::warn!(error = %e, "in-progress ack failed");
                }
                if reason.is_none() {
                    reason = watch.check(env).await;
                }
            }
            Some(payload) = watch.cancels.next(), if reason.is_none() => {
                if watch.is_cancel(&payload) {
                    reason = Some(Stop::Cancel);
                }
            }
            () = &mut timeout, if reason.is_none() => reason = Some(Stop::Timeout),
            () = shutdown.cancelled(), if reason.is_none() => reason = Some(Stop::Shutdown),
            () = emitter.over_limit(), if reason.is_none() => reason = Some(Stop::OverLimit),
        }
        if reason.is_some() {
            stop.cancel();
        }
    };
    if reason == Some(Stop::Superseded) {
        return Ok(Verdict::Superseded);
    }
    // Past a limit the task failed, whether its adapter stopped or finished meanwhile.
    if let Some(why) = emitter.exceeded() {
        return Ok(Verdict::End(TaskEvent::Failed {
            error: why.to_owned(),
            exit_code: None,
        }));
    }
    Ok(match (outcome, reason) {
        (Outcome::Finished(terminal), _) => Verdict::End(terminal),
        (Outcome::Stopped, Some(Stop::Cancel)) => Verdict::End(TaskEvent::Canceled {}),
        (Outcome::Stopped, Some(Stop::Timeout)) => Verdict::End(TaskEvent::Timeout {}),
        (Outcome::Stopped, _) => Verdict::HandBack,
    })
}

/// What a running attempt watches besides its adapter.
struct Watch {
    /// The task.
    task_id: TaskId,
    /// What the task's cancel subject carries, live (at most once).
    cancels: cancels::Watch,
    /// That subject, to look the cancel up in `AXON`.
    cancel_subject: String,
    /// The task's `started` subject.
    started_subject: String,
    /// The stream sequence of this run's `started`.
    own: u64,
}

impl Watch {
    /// Whether a message on the cancel subject is this task's cancel command (anything
    /// else that lands there is not obeyed).
    fn is_cancel(&self, payload: &[u8]) -> bool {
        let command = serde_json::from_slice::<CancelCommand>(payload);
        let ours = command.as_ref().is_ok_and(|c| c.task_id == self.task_id);
        if !ours {
            tracing::warn!(subject = %self.cancel_subject, "a message on the cancel subject that is not this task's cancel; ignored");
        }
        ours
    }

    /// The periodic check against `AXON`: a stored cancel the live subscription missed
    /// (a reconnect), or a newer run's start (this run's command was redelivered while
    /// NATS could not hear from it). A failed lookup changes nothing.
    async fn check(&self, env: &Env) -> Option<Stop> {
        let cancel =
            shared::nats::last_on_subject::<CancelCommand>(&env.axon, self.cancel_subject.clone());
        let started =
            shared::nats::last_on_subject_at::<IgnoredAny>(&env.axon, self.started_subject.clone());
        match tokio::join!(cancel, started) {
            (Ok(Some(command)), _) if command.task_id == self.task_id => Some(Stop::Cancel),
            (_, Ok(Some((last, _)))) if last != self.own => {
                tracing::warn!(subject = %self.started_subject, "a newer run started this task; stopping this one without a report");
                Some(Stop::Superseded)
            }
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(error = %e, "cannot check the stored cancel and start; the live cancel still counts");
                None
            }
            _ => None,
        }
    }
}

/// The checks before a run: an earlier end (unless `guess`ing there was no earlier
/// attempt), a cancel, the attempt limit, the adapter. Returns the adapter's arguments, or
/// the verdict that makes running needless.
async fn preflight(
    env: &Env,
    start: &StartCommand,
    attempt: u32,
    guess: bool,
) -> Result<AdapterArgs, Verdict> {
    let cancel_subject = names::cancel_subject(start.tenant_id, start.task_id);
    // Without a guess: a run that stored its end also stored its start, so a wrong guess
    // shows at the claim. An end stored without a start (a cancel or a refusal before
    // running) is stored again, and the projector drops the second one.
    match if guess {
        Ok(false)
    } else {
        stored::ended(&env.axon, start.tenant_id, start.task_id).await
    } {
        Ok(true) => return Err(Verdict::AlreadyEnded),
        Ok(false) => {}
        Err(e) => {
            tracing::warn!(error = %e, "cannot look for an earlier end; handing the task back");
            return Err(Verdict::HandBack);
        }
    }
    match shared::nats::last_on_subject::<CancelCommand>(&env.axon, cancel_subject).await {
        Ok(Some(command)) if command.task_id == start.task_id => {
            return Err(Verdict::End(TaskEvent::Canceled {}));
        }
        Ok(_) => {}
        // Something else landed on the cancel subject: not a cancel.
        Err(e @ shared::nats::Error::Payload { .. }) => {
            tracing::warn!(error = %e, "not a cancel command; ignored");
        }
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
