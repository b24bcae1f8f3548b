//! The least work the contracts ask of one event, done by bare clients with no AxonTask
//! logic: a JetStream publish with a message id (the worker's event), an ordered consumer
//! reading it back, its row inserted in a batch transaction, its Redis `XADD` in a
//! pipeline, and a second JetStream publish with a message id (`AXON_LOG`), acks in
//! flight throughout. Events a second through all of it, measured on the same machine,
//! is what AxonTask's event rows compare with.

use std::collections::VecDeque;
use std::time::Instant;

use anyhow::Context;
use async_nats::HeaderMap;
use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::consumer::pull::OrderedConfig;
use async_nats::jetstream::{self, Context as JetStream};
use e2e::Cluster;
use futures::{FutureExt, StreamExt};
use serde_json::json;

/// Acks a publisher may await at once (the worker's budget).
const IN_FLIGHT: usize = 4_000;
/// Most messages one batch of the reading side takes (the projector's batch).
const BATCH: usize = 1_000;

/// Events a second through the bare pipeline, `events` of them.
pub async fn measure(cluster: &Cluster, events: usize) -> anyhow::Result<f64> {
    let js = cluster.js().await?;
    for (name, subjects) in [("FLOOR_IN", "floor.in.>"), ("FLOOR_LOG", "floor.log.>")] {
        js.create_stream(jetstream::stream::Config {
            name: name.into(),
            subjects: vec![subjects.into()],
            ..Default::default()
        })
        .await?;
    }
    let pool = cluster.pg().await?;
    sqlx::query(
        "CREATE TABLE floor_events (task bigint, seq bigint, kind text, payload jsonb, hash text,
                                    PRIMARY KEY (task, seq))",
    )
    .execute(&pool)
    .await?;
    let redis = cluster.redis().await?;

    let started = Instant::now();
    let publishing = tokio::spawn(publish_events(js.clone(), events));
    read_and_fan_out(&js, &pool, redis, events).await?;
    publishing.await??;
    Ok(events as f64 / started.elapsed().as_secs_f64())
}

/// The worker's side: every event a publish with its own message id, 16 tasks' subjects.
async fn publish_events(js: JetStream, events: usize) -> anyhow::Result<()> {
    let mut acks = VecDeque::new();
    for i in 0..events {
        let (task, seq) = (i % 16, i / 16 + 1);
        let payload = json!({"task": task, "seq": seq, "kind": "progress", "payload": {"line": "x".repeat(200)}});
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", format!("{task}:{seq}:run").as_str());
        let subject = format!("floor.in.{task}.progress");
        let body = serde_json::to_vec(&payload)?;
        acks.push_back(
            js.publish_with_headers(subject, headers, body.into())
                .await?,
        );
        if acks.len() >= IN_FLIGHT {
            acks.pop_front().context("an ack")?.await?;
        }
    }
    for ack in acks {
        ack.await?;
    }
    Ok(())
}

/// The projector's side: batches read in order, each written to Postgres in one
/// transaction; a task beside it appends each written batch to Redis in one pipeline and
/// publishes it with message ids, as the projector's fan-out does.
async fn read_and_fan_out(
    js: &JetStream,
    pool: &sqlx::PgPool,
    redis: redis::aio::MultiplexedConnection,
    events: usize,
) -> anyhow::Result<()> {
    let stream = js.get_stream("FLOOR_IN").await?;
    let consumer = stream
        .create_consumer(OrderedConfig {
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        })
        .await?;
    let mut messages = consumer.messages().await?;
    let (written, fan_out_queue) = tokio::sync::mpsc::channel(64);
    let fanning = tokio::spawn(fan_out(js.clone(), redis, fan_out_queue));
    let mut read = 0;
    while read < events {
        let mut batch = vec![messages.next().await.context("the consumer ended")??];
        while batch.len() < BATCH {
            match messages.next().now_or_never() {
                Some(Some(message)) => batch.push(message?),
                _ => break,
            }
        }
        read += batch.len();
        let decoded: Vec<Event> = batch
            .iter()
            .map(|m| Event::decode(&m.payload))
            .collect::<Result<_, _>>()?;
        let mut tx = pool.begin().await?;
        sqlx::query(
            "INSERT INTO floor_events SELECT t, s, 'progress', p, 'h'
             FROM UNNEST($1::bigint[], $2::bigint[], $3::jsonb[]) AS u(t, s, p)",
        )
        .bind(decoded.iter().map(|e| e.task).collect::<Vec<_>>())
        .bind(decoded.iter().map(|e| e.seq).collect::<Vec<_>>())
        .bind(
            decoded
                .iter()
                .map(|e| e.payload.clone())
                .collect::<Vec<_>>(),
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        written
            .send(decoded.into_iter().zip(batch).collect())
            .await?;
    }
    drop(written);
    fanning.await?
}

/// One event as the floor's publisher wrote it.
struct Event {
    task: i64,
    seq: i64,
    payload: serde_json::Value,
}

impl Event {
    fn decode(body: &[u8]) -> anyhow::Result<Self> {
        let mut value: serde_json::Value = serde_json::from_slice(body)?;
        let number = |key: &str| value[key].as_i64().context("a number");
        let (task, seq) = (number("task")?, number("seq")?);
        Ok(Self {
            task,
            seq,
            payload: value["payload"].take(),
        })
    }
}

/// Appends each written batch to Redis and publishes it, acks awaited per batch.
async fn fan_out(
    js: JetStream,
    mut redis: redis::aio::MultiplexedConnection,
    mut written: tokio::sync::mpsc::Receiver<Vec<(Event, jetstream::Message)>>,
) -> anyhow::Result<()> {
    while let Some(batch) = written.recv().await {
        let mut pipe = redis::pipe();
        for (event, message) in &batch {
            pipe.cmd("XADD")
                .arg(format!("floor:{}", event.task))
                .arg(format!("{}-0", event.seq))
                .arg("data")
                .arg(message.payload.as_ref())
                .ignore();
        }
        pipe.query_async::<()>(&mut redis).await?;
        let mut acks = Vec::with_capacity(batch.len());
        for (event, message) in batch {
            let mut headers = HeaderMap::new();
            headers.insert(
                "Nats-Msg-Id",
                format!("{}:{}", event.task, event.seq).as_str(),
            );
            let subject = format!("floor.log.{}.progress", event.task);
            acks.push(
                js.publish_with_headers(subject, headers, message.payload.clone())
                    .await?,
            );
        }
        for ack in acks {
            ack.await?;
        }
    }
    Ok(())
}
