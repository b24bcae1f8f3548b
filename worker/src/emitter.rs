//! Publishes one attempt's events to `axon.evt.*`, in order, with JetStream acks in flight.
//! A failed ack is retried with the same `Nats-Msg-Id`, so JetStream stores each event once.
//! Message ids name the run (an id minted per emitter), so two runs never share one.
//!
//! Invariant: a publish first takes a permit of the process-wide [`AckBudget`], and a task
//! of the attempt's own awaits each ack as it comes and frees its permit, so the acks
//! awaited at once stay below async-nats's limit per client whatever the number of
//! attempts and their event rates, and no publish waits for a permit nobody frees.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, PoisonError};
use std::time::Duration;

use async_nats::jetstream::Context;
use async_nats::jetstream::context::{PublishAckFuture, PublishErrorKind};
use async_nats::{HeaderMap, header};
use bytes::Bytes;
use shared::events::wire::WorkerEvent;
use shared::events::{EventKind, TaskEvent};
use shared::ids::{TaskId, TenantId};
use shared::names;
use tokio::sync::{Mutex, OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Acks one process awaits at once, below async-nats's 5,000 per client (which leaves
/// room for the other publishers sharing the client).
const PROCESS_ACKS: usize = 4_000;

/// The header that names the subject `Nats-Expected-Last-Subject-Sequence` applies to
/// (NATS 2.11), so an event can be stored only while the task's last start is a known one.
const EXPECTED_SUBJECT: &str = "Nats-Expected-Last-Subject-Sequence-Subject";

/// The worker is shutting down before an event could be stored.
#[derive(Debug, thiserror::Error)]
#[error("shutting down before NATS stored the task's events")]
pub struct ShuttingDown;

/// The publish acks every attempt of this process may await at once.
#[derive(Clone)]
pub struct AckBudget(Arc<Semaphore>);

impl Default for AckBudget {
    fn default() -> Self {
        Self(Arc::new(Semaphore::new(PROCESS_ACKS)))
    }
}

struct Outbound {
    subject: String,
    msg_id: String,
    payload: Bytes,
    /// Store only if this is the stream sequence of the task's last `started` (0: none).
    guard: Option<u64>,
}

/// The attempt a run makes at a task.
#[derive(Debug, Clone, Copy)]
pub struct Attempt {
    /// The task.
    pub task_id: TaskId,
    /// Its tenant.
    pub tenant_id: TenantId,
    /// The attempt's number: one more than the last stored start's.
    pub number: u32,
    /// The stream sequence of the last stored `started` (0: none).
    pub previous: u64,
}

/// What one run may report.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Events (`TASK_MAX_EVENTS`).
    pub max_events: u64,
    /// Bytes of output lines (`TASK_MAX_OUTPUT_BYTES`).
    pub max_output_bytes: u64,
}

/// What the run reported so far, against its [`Limits`].
#[derive(Default)]
struct Usage {
    events: u64,
    output_bytes: u64,
}

/// Another run claimed the attempt first.
#[derive(Debug)]
pub struct Taken;

/// A published event whose ack is awaited, with the permit it holds until then.
struct InFlight {
    outbound: Outbound,
    ack: PublishAckFuture,
    _permit: OwnedSemaphorePermit,
}

/// What publishes and what confirms share.
#[derive(Clone)]
struct Publisher {
    js: Context,
    task_id: TaskId,
    /// The task's `started` subject, which guarded publishes check.
    started_subject: String,
    shutdown: CancellationToken,
}

/// The event publisher of one attempt.
pub struct Emitter {
    publisher: Publisher,
    tenant_id: TenantId,
    attempt: u32,
    /// This run's id, in every message id.
    run: Uuid,
    /// The stream sequence of the task's last `started` as this run knows it: the one
    /// before its claim, then its own.
    started: AtomicU64,
    budget: AckBudget,
    /// Events published so far (serializes publishing, so ids follow the order).
    sent: Mutex<u64>,
    limits: Limits,
    usage: std::sync::Mutex<Usage>,
    /// Why the run went over its limits; fires `over`.
    exceeded: OnceLock<String>,
    over: CancellationToken,
    in_flight: mpsc::UnboundedSender<InFlight>,
    /// Events JetStream confirmed so far, in order.
    confirmed: watch::Receiver<u64>,
}

impl Emitter {
    /// A publisher for `attempt`; `shutdown` ends retries. It spawns the task that awaits
    /// its acks, which ends with the emitter.
    pub fn new(
        js: Context,
        attempt: Attempt,
        limits: Limits,
        budget: AckBudget,
        shutdown: CancellationToken,
    ) -> Self {
        let Attempt {
            task_id,
            tenant_id,
            number: attempt,
            previous,
        } = attempt;
        let publisher = Publisher {
            js,
            task_id,
            started_subject: names::event_subject(tenant_id, task_id, EventKind::Started),
            shutdown,
        };
        let (in_flight, acks) = mpsc::unbounded_channel();
        let (confirm, confirmed) = watch::channel(0);
        tokio::spawn(publisher.clone().confirm_all(acks, confirm));
        Self {
            publisher,
            tenant_id,
            attempt,
            run: Uuid::now_v7(),
            started: AtomicU64::new(previous),
            budget,
            sent: Mutex::new(0),
            limits,
            usage: std::sync::Mutex::default(),
            exceeded: OnceLock::new(),
            over: CancellationToken::new(),
            in_flight,
            confirmed,
        }
    }

    /// This run's id.
    pub fn run(&self) -> Uuid {
        self.run
    }

    /// The task, its tenant and this run's attempt number.
    pub fn attempt(&self) -> (TaskId, TenantId, u32) {
        (self.publisher.task_id, self.tenant_id, self.attempt)
    }

    /// Claims the attempt: publishes `started` only if the task's last start is still the
    /// one before this run, and waits until it is stored. Returns its stream sequence, or
    /// [`Taken`] if another run started first. Call it before any other publish.
    pub async fn claim(&self, started: TaskEvent) -> Result<Result<u64, Taken>, ShuttingDown> {
        let outbound = self.outbound(started, 0, true);
        let claimed = self.publisher.guarded(&outbound).await?;
        if let Ok(own) = claimed {
            self.started.store(own, Ordering::Relaxed);
        }
        Ok(claimed)
    }

    /// Publishes the terminal event after every earlier one is stored, only if this run's
    /// start is still the task's last, and waits until it is stored; [`Taken`] if a newer
    /// run started meanwhile (this run's command went to another worker).
    pub async fn finish(&self, terminal: TaskEvent) -> Result<Result<(), Taken>, ShuttingDown> {
        self.flush().await?;
        let index = *self.sent.lock().await + 1;
        let outbound = self.outbound(terminal, index, true);
        Ok(self.publisher.guarded(&outbound).await?.map(drop))
    }

    /// An event as published; `guarded` ones are stored only if the task's last start is
    /// still the one this run knows.
    fn outbound(&self, event: TaskEvent, index: u64, guarded: bool) -> Outbound {
        let task_id = self.publisher.task_id;
        let wire = WorkerEvent {
            task_id,
            tenant_id: self.tenant_id,
            attempt: self.attempt,
            ts: shared::time::now_ts(),
            event,
        };
        Outbound {
            subject: names::event_subject(self.tenant_id, task_id, wire.event.kind()),
            msg_id: format!("{task_id}:{}:{index}", self.run),
            payload: serde_json::to_vec(&wire)
                .expect("worker events always serialize")
                .into(),
            guard: guarded.then(|| self.started.load(Ordering::Relaxed)),
        }
    }

    /// Completes once the run went over its limits.
    pub async fn over_limit(&self) {
        self.over.cancelled().await;
    }

    /// Why the run went over its limits, if it did.
    pub fn exceeded(&self) -> Option<&str> {
        self.exceeded.get().map(String::as_str)
    }

    /// Counts `event` against the limits; false (and the run marked as over) past them.
    fn within_limits(&self, event: &TaskEvent) -> bool {
        let mut usage = self.usage.lock().unwrap_or_else(PoisonError::into_inner);
        usage.events += 1;
        if let TaskEvent::Stdout { line } | TaskEvent::Stderr { line } = event {
            usage.output_bytes += line.len() as u64;
        }
        let why = if usage.events > self.limits.max_events {
            format!(
                "the task reported more than TASK_MAX_EVENTS ({}) events and was stopped",
                self.limits.max_events
            )
        } else if usage.output_bytes > self.limits.max_output_bytes {
            format!(
                "the task wrote more than TASK_MAX_OUTPUT_BYTES ({}) bytes of output and was stopped",
                self.limits.max_output_bytes
            )
        } else {
            return true;
        };
        if self.exceeded.set(why).is_ok() {
            self.over.cancel();
        }
        false
    }

    /// Publishes an event stamped now; waits only while the process has too many acks
    /// in flight. An event past the run's limits is dropped (see [`Emitter::over_limit`]).
    pub async fn emit(&self, event: TaskEvent) -> Result<(), ShuttingDown> {
        if !self.within_limits(&event) {
            return Ok(());
        }
        let mut sent = self.sent.lock().await;
        let permit = tokio::select! {
            permit = self.budget.0.clone().acquire_owned() => permit.map_err(|_| ShuttingDown)?,
            () = self.publisher.shutdown.cancelled() => return Err(ShuttingDown),
        };
        *sent += 1;
        let outbound = self.outbound(event, *sent, false);
        let ack = self.publisher.send(&outbound).await?;
        self.in_flight
            .send(InFlight {
                outbound,
                ack,
                _permit: permit,
            })
            .map_err(|_| ShuttingDown)
    }

    /// Waits until JetStream has stored every event published so far.
    pub async fn flush(&self) -> Result<(), ShuttingDown> {
        let sent = *self.sent.lock().await;
        let mut confirmed = self.confirmed.clone();
        tokio::select! {
            reached = confirmed.wait_for(|&n| n >= sent) => reached.map(|_| ()).map_err(|_| ShuttingDown),
            () = self.publisher.shutdown.cancelled() => Err(ShuttingDown),
        }
    }
}

impl Publisher {
    /// Awaits each ack in publishing order, publishing again what was not stored, and
    /// frees each permit as its ack arrives; ends when the emitter is dropped.
    async fn confirm_all(
        self,
        mut acks: mpsc::UnboundedReceiver<InFlight>,
        confirmed: watch::Sender<u64>,
    ) {
        let mut count = 0;
        while let Some(in_flight) = acks.recv().await {
            let InFlight {
                outbound,
                ack,
                _permit,
            } = in_flight;
            if self.confirm(outbound, ack).await.is_err() {
                return;
            }
            count += 1;
            confirmed.send_replace(count);
        }
    }

    async fn send(&self, outbound: &Outbound) -> Result<PublishAckFuture, ShuttingDown> {
        let mut backoff = Duration::from_millis(50);
        loop {
            let mut headers = HeaderMap::new();
            headers.insert(header::NATS_MESSAGE_ID, outbound.msg_id.as_str());
            if let Some(last) = outbound.guard {
                headers.insert(
                    header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
                    last.to_string().as_str(),
                );
                headers.insert(EXPECTED_SUBJECT, self.started_subject.as_str());
            }
            match self
                .js
                .publish_with_headers(outbound.subject.clone(), headers, outbound.payload.clone())
                .await
            {
                Ok(ack) => return Ok(ack),
                Err(e) => {
                    tracing::warn!(task_id = %self.task_id, error = %e, "publish failed; retrying");
                    self.pause(&mut backoff).await?;
                }
            }
        }
    }

    async fn confirm(&self, outbound: Outbound, ack: PublishAckFuture) -> Result<(), ShuttingDown> {
        let mut ack = ack;
        let mut backoff = Duration::from_millis(50);
        loop {
            match ack.await {
                Ok(_) => return Ok(()),
                Err(e) => {
                    tracing::warn!(task_id = %self.task_id, error = %e, "no ack; publishing again");
                    self.pause(&mut backoff).await?;
                    ack = self.send(&outbound).await?;
                }
            }
        }
    }

    /// Publishes a guarded `outbound` until it is stored or refused. A retry after a lost
    /// ack is answered as a duplicate of the stored message (its id is checked before the
    /// guard), so a run never mistakes its own publish for another's.
    async fn guarded(&self, outbound: &Outbound) -> Result<Result<u64, Taken>, ShuttingDown> {
        let mut backoff = Duration::from_millis(50);
        loop {
            match self.send(outbound).await?.await {
                Ok(ack) => return Ok(Ok(ack.sequence)),
                Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => return Ok(Err(Taken)),
                Err(e) => {
                    tracing::warn!(task_id = %self.task_id, error = %e, "no ack; publishing again");
                    self.pause(&mut backoff).await?;
                }
            }
        }
    }

    async fn pause(&self, backoff: &mut Duration) -> Result<(), ShuttingDown> {
        tokio::select! {
            () = tokio::time::sleep(*backoff) => {
                *backoff = (*backoff * 2).min(Duration::from_secs(5));
                Ok(())
            }
            () = self.shutdown.cancelled() => Err(ShuttingDown),
        }
    }
}
