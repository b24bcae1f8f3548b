//! Publishes one attempt's events to `axon.evt.*`, in order, with JetStream acks in flight.
//! A failed ack is retried with the same `Nats-Msg-Id`, so JetStream stores each event once.

use std::collections::VecDeque;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::Context;
use async_nats::jetstream::context::PublishAckFuture;
use bytes::Bytes;
use shared::events::TaskEvent;
use shared::events::wire::WorkerEvent;
use shared::ids::{TaskId, TenantId};
use shared::names;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

/// Acks awaited at once before publishing more (async-nats allows 5,000 in flight).
const MAX_IN_FLIGHT: usize = 256;

/// The worker is shutting down before an event could be stored.
#[derive(Debug, thiserror::Error)]
#[error("shutting down before NATS stored the task's events")]
pub struct ShuttingDown;

struct Outbound {
    subject: String,
    msg_id: String,
    payload: Bytes,
}

struct Pending {
    sent: u64,
    in_flight: VecDeque<(Outbound, PublishAckFuture)>,
}

/// The event publisher of one attempt.
pub struct Emitter {
    js: Context,
    task_id: TaskId,
    tenant_id: TenantId,
    attempt: u32,
    shutdown: CancellationToken,
    pending: Mutex<Pending>,
}

impl Emitter {
    /// A publisher for `attempt` of a task; `shutdown` ends retries.
    pub fn new(
        js: Context,
        task_id: TaskId,
        tenant_id: TenantId,
        attempt: u32,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            js,
            task_id,
            tenant_id,
            attempt,
            shutdown,
            pending: Mutex::new(Pending {
                sent: 0,
                in_flight: VecDeque::new(),
            }),
        }
    }

    /// Publishes an event stamped now; waits only when too many acks are in flight.
    pub async fn emit(&self, event: TaskEvent) -> Result<(), ShuttingDown> {
        let wire = WorkerEvent {
            task_id: self.task_id,
            tenant_id: self.tenant_id,
            attempt: self.attempt,
            ts: shared::time::now_ts(),
            event,
        };
        let payload = serde_json::to_vec(&wire).expect("worker events always serialize");
        let mut pending = self.pending.lock().await;
        pending.sent += 1;
        let outbound = Outbound {
            subject: names::event_subject(self.tenant_id, self.task_id, wire.event.kind()),
            msg_id: format!("{}:{}:{}", self.task_id, self.attempt, pending.sent),
            payload: payload.into(),
        };
        let ack = self.send(&outbound).await?;
        pending.in_flight.push_back((outbound, ack));
        while pending.in_flight.len() > MAX_IN_FLIGHT {
            if let Some((outbound, ack)) = pending.in_flight.pop_front() {
                self.confirm(outbound, ack).await?;
            }
        }
        Ok(())
    }

    /// Waits until JetStream has stored every event published so far.
    pub async fn flush(&self) -> Result<(), ShuttingDown> {
        let mut pending = self.pending.lock().await;
        while let Some((outbound, ack)) = pending.in_flight.pop_front() {
            self.confirm(outbound, ack).await?;
        }
        Ok(())
    }

    async fn send(&self, outbound: &Outbound) -> Result<PublishAckFuture, ShuttingDown> {
        let mut backoff = Duration::from_millis(50);
        loop {
            let mut headers = HeaderMap::new();
            headers.insert("Nats-Msg-Id", outbound.msg_id.as_str());
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
