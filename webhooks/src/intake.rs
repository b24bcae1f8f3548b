//! From `AXON_LOG` to queued deliveries: a durable consumer of its own (`webhooks`), so no
//! event is missed across restarts; each chunk of events is queued in one statement and
//! acked after it, and a replayed event queues nothing twice.

use std::time::Duration;

use async_nats::jetstream::AckKind;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use async_nats::jetstream::stream::Stream;
use futures::StreamExt;
use shared::events::wire::Envelope;
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

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
        ack_policy: AckPolicy::Explicit,
        ack_wait: Duration::from_secs(30),
        max_ack_pending: 10_000,
        ..Default::default()
    }
}

/// Makes (or updates) the consumer on `AXON_LOG`.
pub async fn consumer(log: &Stream) -> Result<PullConsumer, async_nats::Error> {
    Ok(log.create_consumer(config()).await?)
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
            let logged = decode(&messages);
            match store::enqueue(&pool, logged).await {
                Ok(n) => {
                    for message in &messages {
                        let _ = message.ack().await;
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

/// The events of `messages` as columns; one that is not an envelope is skipped (and acked
/// with the rest: it can never be delivered).
fn decode(messages: &[async_nats::jetstream::Message]) -> Logged {
    let mut logged = Logged::default();
    for message in messages {
        let Ok(event) = serde_json::from_slice::<serde_json::Value>(&message.payload) else {
            tracing::warn!(subject = %message.subject, "not JSON in AXON_LOG; no webhook gets it");
            continue;
        };
        let Ok(envelope) = serde_json::from_value::<Envelope>(event.clone()) else {
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
