//! From `AXON_LOG` to queued deliveries: a durable consumer of its own (`webhooks`), so no
//! event is missed across restarts; each chunk of events is queued in one statement and
//! acked after it, and a replayed event queues nothing twice.

use std::time::Duration;

use async_nats::jetstream::AckKind;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use async_nats::jetstream::stream::Stream;
use futures::StreamExt;
use serde::Deserialize;
use shared::events::wire::Envelope;
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::store::{self, Logged};

/// The durable consumer's name.
pub const CONSUMER: &str = "webhooks";
/// Events queued in one statement at most.
const CHUNK: usize = 256;
/// Pause after a failure.
const RETRY: Duration = Duration::from_secs(1);

fn config() -> pull::Config {
    pull::Config {
        durable_name: Some(CONSUMER.to_owned()),
        filter_subject: "axon.log.>".to_owned(),
        // From when deliveries first ran: earlier events had no webhooks to go to.
        deliver_policy: DeliverPolicy::New,
        // One ack for a whole chunk, once its deliveries are queued.
        ack_policy: AckPolicy::All,
        ack_wait: Duration::from_secs(30),
        max_ack_pending: 10_000,
        ..Default::default()
    }
}

/// The consumer on `AXON_LOG`: made on first start, taken as it is after. One made by an
/// earlier version acked each message; a consumer's ack policy cannot change, so it is
/// made anew from the first message it had not acked.
pub async fn consumer(log: &Stream) -> Result<PullConsumer, async_nats::Error> {
    let config = match log.consumer_info(CONSUMER).await {
        Ok(info) if info.config.ack_policy == AckPolicy::All => {
            return log.get_consumer(CONSUMER).await;
        }
        Ok(info) => {
            // Another webhooks process may have deleted it first; it makes the same one.
            if let Err(e) = log.delete_consumer(CONSUMER).await {
                tracing::debug!(error = %e, "the old intake consumer is gone already");
            }
            pull::Config {
                deliver_policy: DeliverPolicy::ByStartSequence {
                    start_sequence: info.ack_floor.stream_sequence + 1,
                },
                ..config()
            }
        }
        Err(_) => config(),
    };
    Ok(log.create_consumer(config).await?)
}

/// Queues deliveries until `shutdown`, waking `queued` whenever it queued some.
pub async fn run(
    log: Stream,
    consumer: PullConsumer,
    pool: PgPool,
    queued: &Notify,
    shutdown: CancellationToken,
) {
    let mut consumer = consumer;
    while !shutdown.is_cancelled() {
        let messages = match consumer.messages().await {
            Ok(messages) => messages,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read AXON_LOG for webhooks; retrying");
                if pause(&shutdown).await {
                    return;
                }
                if let Ok(renewed) = self::consumer(&log).await {
                    consumer = renewed;
                }
                continue;
            }
        };
        let mut chunks = messages.ready_chunks(CHUNK);
        loop {
            let chunk = tokio::select! {
                chunk = chunks.next() => chunk,
                () = shutdown.cancelled() => return,
            };
            let Some(chunk) = chunk else { break };
            let mut messages = Vec::with_capacity(chunk.len());
            for message in chunk {
                match message {
                    Ok(message) => messages.push(message),
                    Err(e) => tracing::warn!(error = %e, "reading AXON_LOG for webhooks failed"),
                }
            }
            if messages.is_empty() {
                continue;
            }
            match queue(&pool, &messages).await {
                Ok(n) => {
                    // Acks every message of the chunk (the consumer acks all up to it).
                    if let Some(last) = messages.last() {
                        let _ = last.ack().await;
                    }
                    if n > 0 {
                        queued.notify_one();
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot queue webhook deliveries; retrying");
                    for message in &messages {
                        let _ = message.ack_with(AckKind::Nak(Some(RETRY))).await;
                    }
                    if pause(&shutdown).await {
                        return;
                    }
                }
            }
        }
    }
}

/// True if shut down during the pause.
async fn pause(shutdown: &CancellationToken) -> bool {
    tokio::select! {
        () = tokio::time::sleep(RETRY) => false,
        () = shutdown.cancelled() => true,
    }
}

/// Queues the deliveries of `messages`; how many. Only the events some webhook subscribes
/// to are read: the webhooks of the chunk's tenants are looked up first, by the tenant and
/// kind each subject names.
async fn queue(
    pool: &PgPool,
    messages: &[async_nats::jetstream::Message],
) -> Result<u64, sqlx::Error> {
    let named: Vec<_> = messages.iter().map(|m| named_by(&m.subject)).collect();
    let mut tenants: Vec<Uuid> = named.iter().flatten().map(|(tenant, _)| *tenant).collect();
    tenants.sort_unstable();
    tenants.dedup();
    let wanted = store::subscriptions(pool, &tenants).await?;
    let chosen = messages
        .iter()
        .zip(&named)
        .filter(|(_, named)| match named {
            Some((tenant, kind)) => wanted.contains(&(*tenant, (*kind).to_owned())),
            // Not a log subject: its payload decides.
            None => true,
        });
    let logged = decode(chosen.map(|(message, _)| message));
    if logged.events.is_empty() {
        return Ok(0);
    }
    store::enqueue(pool, logged).await
}

/// The tenant and kind a log subject (`axon.log.{tenant}.{task}.{kind}`) names.
fn named_by(subject: &str) -> Option<(Uuid, &str)> {
    let mut tokens = subject.split('.');
    let (Some("axon"), Some("log"), Some(tenant), Some(_task), Some(kind), None) = (
        tokens.next(),
        tokens.next(),
        tokens.next(),
        tokens.next(),
        tokens.next(),
        tokens.next(),
    ) else {
        return None;
    };
    Some((tenant.parse().ok()?, kind))
}

/// The events of `messages` as columns; one that is not an envelope is skipped (and acked
/// with the rest: it can never be delivered).
fn decode<'a>(messages: impl Iterator<Item = &'a async_nats::jetstream::Message>) -> Logged {
    let mut logged = Logged::default();
    for message in messages {
        let Ok(event) = serde_json::from_slice::<serde_json::Value>(&message.payload) else {
            tracing::warn!(subject = %message.subject, "not JSON in AXON_LOG; no webhook gets it");
            continue;
        };
        let Ok(envelope) = Envelope::deserialize(&event) else {
            tracing::warn!(subject = %message.subject, "not an envelope in AXON_LOG; no webhook gets it");
            continue;
        };
        logged.tenants.push(envelope.tenant_id.0);
        logged.tasks.push(envelope.task_id.0);
        logged
            .seqs
            .push(i64::try_from(envelope.seq).unwrap_or(i64::MAX));
        logged.kinds.push(envelope.kind.as_str().to_owned());
        logged.events.push(event);
    }
    logged
}
