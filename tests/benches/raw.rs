//! The raw speed of the services AxonTask stands on, measured in the same run as its own
//! rows so those read as ratios: JetStream publish and pull, Redis `XADD`, a Postgres batch
//! insert, and a bare axum handler under the same `wrk` load as the API.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use anyhow::Context;
use async_nats::jetstream::consumer::{AckPolicy, pull};
use e2e::Cluster;
use futures::StreamExt;
use serde_json::json;

use crate::load;

/// Bytes of each raw message: about an event's envelope.
const PAYLOAD: usize = 300;

/// What the raw rows measured.
pub struct Raw {
    /// JetStream publishes a second, acks in flight.
    pub publish: f64,
    /// JetStream messages pulled a second.
    pub pull: f64,
    /// Redis entries appended a second.
    pub xadd: f64,
    /// Postgres rows inserted a second.
    pub insert: f64,
    /// A bare axum handler under `wrk` (32 connections).
    pub http: load::Wrk,
    /// The same, from one connection pausing 2 ms between requests.
    pub http_one: load::Wrk,
}

/// Measures every raw row with `messages` messages (rows, entries) each.
pub async fn measure(cluster: &Cluster, messages: usize, seconds: u64) -> anyhow::Result<Raw> {
    let (publish, pull) = nats(cluster, messages).await?;
    let xadd = redis(cluster, messages).await?;
    let insert = postgres(cluster, messages).await?;
    let (http, http_one) = bare_axum(seconds).await?;
    Ok(Raw {
        publish,
        pull,
        xadd,
        insert,
        http,
        http_one,
    })
}

fn per_second(count: usize, started: Instant) -> f64 {
    count as f64 / started.elapsed().as_secs_f64()
}

fn bytes_of(n: usize) -> Vec<u8> {
    (0..n).map(|i| b'a' + (i % 26) as u8).collect()
}

/// Publishes `messages` with 4,000 acks in flight, then pulls them all back in batches.
async fn nats(cluster: &Cluster, messages: usize) -> anyhow::Result<(f64, f64)> {
    let js = cluster.js().await?;
    let stream = js
        .create_stream(async_nats::jetstream::stream::Config {
            name: "BENCH".into(),
            subjects: vec!["bench.>".into()],
            ..Default::default()
        })
        .await?;
    let payload = bytes_of(PAYLOAD);
    let started = Instant::now();
    let mut acks = VecDeque::new();
    for i in 0..messages {
        acks.push_back(
            js.publish(format!("bench.{}", i % 100), payload.clone().into())
                .await?,
        );
        if acks.len() >= 4_000 {
            acks.pop_front().context("an ack")?.await?;
        }
    }
    for ack in acks {
        ack.await?;
    }
    let publish = per_second(messages, started);

    let consumer = stream
        .create_consumer(pull::Config {
            ack_policy: AckPolicy::None,
            ..Default::default()
        })
        .await?;
    let started = Instant::now();
    let mut pulled = 0;
    let mut all = consumer.messages().await?;
    while pulled < messages {
        all.next().await.context("the pull ended")??;
        pulled += 1;
    }
    Ok((publish, per_second(messages, started)))
}

async fn redis(cluster: &Cluster, messages: usize) -> anyhow::Result<f64> {
    let mut redis = cluster.redis().await?;
    let payload = String::from_utf8(bytes_of(PAYLOAD))?;
    let started = Instant::now();
    for batch in 0..messages / 1_000 {
        let mut pipe = redis::pipe();
        for i in 0..1_000 {
            pipe.cmd("XADD")
                .arg(format!("bench:{}", (batch * 1_000 + i) % 100))
                .arg("*")
                .arg("data")
                .arg(&payload)
                .ignore();
        }
        pipe.query_async::<()>(&mut redis).await?;
    }
    Ok(per_second(messages, started))
}

async fn postgres(cluster: &Cluster, messages: usize) -> anyhow::Result<f64> {
    let pool = cluster.pg().await?;
    sqlx::query("CREATE TABLE bench_rows (id uuid, seq bigint, kind text, payload jsonb, PRIMARY KEY (id, seq))")
        .execute(&pool)
        .await?;
    let id = uuid::Uuid::now_v7();
    let payload = json!({"line": String::from_utf8(bytes_of(PAYLOAD - 20))?});
    let started = Instant::now();
    for batch in 0..messages / 1_000 {
        let seqs: Vec<i64> = (0..1_000).map(|i| (batch * 1_000 + i) as i64).collect();
        let mut tx = pool.begin().await?;
        sqlx::query(
            "INSERT INTO bench_rows SELECT $1, s, 'stdout', $2 FROM UNNEST($3::bigint[]) AS s",
        )
        .bind(id)
        .bind(&payload)
        .bind(seqs)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
    }
    Ok(per_second(messages, started))
}

/// A handler that answers `ok`, served by axum in this process, under `wrk` as the API's
/// rows are: 32 connections, then one connection pausing 2 ms between requests.
async fn bare_axum(seconds: u64) -> anyhow::Result<(load::Wrk, load::Wrk)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/", listener.local_addr()?);
    let app = axum::Router::new().route("/", axum::routing::get(|| async { "ok" }));
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let mut runs = Vec::new();
    for (connections, pause) in [(32, None), (1, Some(Duration::from_millis(2)))] {
        runs.push(
            load::run(&load::Load {
                url: url.clone(),
                key: "",
                body: None,
                connections,
                duration: Duration::from_secs(seconds),
                pause,
            })
            .await?,
        );
    }
    server.abort();
    let one = runs.pop().context("two runs")?;
    Ok((runs.pop().context("two runs")?, one))
}
