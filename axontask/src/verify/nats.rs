//! Stream `AXON_LOG` as a source of a task's events.

use anyhow::Context;
use async_nats::jetstream::consumer::pull::OrderedConfig;
use futures::StreamExt;
use shared::events::wire::Envelope;
use shared::ids::{TaskId, TenantId};
use shared::names;

/// The task's events as `AXON_LOG` holds them, in seq order; a message published twice
/// (the same event) counts once.
pub async fn events(
    url: &str,
    task: TaskId,
    tenant: Option<TenantId>,
) -> anyhow::Result<Vec<Envelope>> {
    let (_client, js) = shared::nats::connect(url, "axontask-verify").await?;
    let stream = js
        .get_stream(names::STREAM_AXON_LOG)
        .await
        .context("stream AXON_LOG")?;
    let tenant = tenant.map_or_else(|| "*".to_owned(), |t| t.to_string());
    let consumer = stream
        .create_consumer(OrderedConfig {
            filter_subject: format!("axon.log.{tenant}.{task}.>"),
            ..Default::default()
        })
        .await
        .context("reading AXON_LOG (the NATS user needs to read it)")?;
    let mut consumer = consumer;
    let pending = consumer
        .info()
        .await
        .context("AXON_LOG consumer")?
        .num_pending;
    let mut events: Vec<Envelope> = Vec::new();
    if pending == 0 {
        return Ok(events);
    }
    let mut messages = consumer.messages().await.context("reading AXON_LOG")?;
    while let Some(message) = messages.next().await {
        let message = message.context("reading AXON_LOG")?;
        let event: Envelope = serde_json::from_slice(&message.payload).with_context(|| {
            format!(
                "{} holds something that is not an envelope",
                message.subject
            )
        })?;
        if !events.contains(&event) {
            events.push(event);
        }
        if message.info().map_or(true, |i| i.pending == 0) {
            break;
        }
    }
    events.sort_by_key(|e| e.seq);
    Ok(events)
}
