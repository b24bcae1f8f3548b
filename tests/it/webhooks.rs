//! Webhooks (issue 8, item 7): signed deliveries of terminal events to a local receiver,
//! retries with every attempt recorded, test deliveries, and targets refused (private
//! addresses at creation and at delivery time, bad input, other tenants, read-only keys),
//! and the intake consumer of an earlier version made again.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use e2e::{Cluster, Options};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::sync::mpsc;

/// A delivery as the receiver got it.
struct Received {
    delivery: String,
    timestamp: String,
    signature: String,
    body: Bytes,
}

impl Received {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }

    /// Whether the signature is HMAC-SHA256(secret, "<timestamp>.<body>").
    fn signed_with(&self, secret: &str) -> bool {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key");
        mac.update(self.timestamp.as_bytes());
        mac.update(b".");
        mac.update(&self.body);
        self.signature == format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    }
}

/// A local receiver that fails its first `failures` requests with 500; its URL and what it
/// received.
async fn receiver(failures: usize) -> anyhow::Result<(String, mpsc::UnboundedReceiver<Received>)> {
    let (sent, received) = mpsc::unbounded_channel();
    let seen = Arc::new(AtomicUsize::new(0));
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let sent = sent.clone();
            let seen = seen.clone();
            async move {
                let header = |name: &str| {
                    headers
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned()
                };
                let _ = sent.send(Received {
                    delivery: header("x-axon-delivery"),
                    timestamp: header("x-axon-timestamp"),
                    signature: header("x-axon-signature"),
                    body,
                });
                if seen.fetch_add(1, Ordering::SeqCst) < failures {
                    StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    StatusCode::NO_CONTENT
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((url, received))
}

async fn next(received: &mut mpsc::UnboundedReceiver<Received>) -> anyhow::Result<Received> {
    tokio::time::timeout(e2e::PATIENCE, received.recv())
        .await
        .context("no delivery in time")?
        .context("the receiver stopped")
}

/// Makes a webhook with `key`; its id and secret.
async fn subscribe(cluster: &Cluster, key: &str, body: Value) -> anyhow::Result<(String, String)> {
    let (status, made) = cluster.post("/api/webhooks", Some(key), &body).await?;
    anyhow::ensure!(
        status == 201,
        "POST /api/webhooks answered {status}: {made}"
    );
    Ok((
        made["id"].as_str().context("id")?.to_owned(),
        made["secret"].as_str().context("secret")?.to_owned(),
    ))
}

#[tokio::test]
async fn terminal_events_are_delivered_signed_and_a_failing_receiver_gets_the_third_attempt()
-> anyhow::Result<()> {
    let mut cluster = Cluster::start(Options {
        env: vec![
            ("WEBHOOK_ALLOW_PRIVATE", "true"),
            ("WEBHOOK_RETRY_BASE_MS", "200"),
        ],
        ..Options::default()
    })
    .await?;
    cluster.spawn_role("webhooks", "webhooks").await?;
    let key = cluster.api_key.clone();
    let (url, mut received) = receiver(0).await?;
    let (id, secret) = subscribe(&cluster, &key, json!({"url": url})).await?;

    // Test deliveries are signed like the real ones.
    let (status, tested) = cluster
        .post(&format!("/api/webhooks/{id}/test"), Some(&key), &json!({}))
        .await?;
    assert_eq!(
        (status, tested["delivered"].clone()),
        (200, json!(true)),
        "{tested}"
    );
    let test = next(&mut received).await?;
    assert!(test.signed_with(&secret));
    assert_eq!(test.json()["event"]["kind"], "test");

    let succeeds = cluster
        .start_task(
            json!({"name": "ok", "adapter": "mock", "args": {"steps": 2, "interval_ms": 1}}),
        )
        .await?;
    let fails = cluster
        .start_task(json!({"name": "no", "adapter": "mock", "args": {"steps": 2, "fail_at": 1}}))
        .await?;
    let mut ends = Vec::new();
    for task in [&succeeds, &fails] {
        ends.push(cluster.stream_to_end(task).await?.pop().context("an end")?);
    }
    let mut delivered = Vec::new();
    for _ in 0..2 {
        let delivery = next(&mut received).await?;
        assert!(delivery.signed_with(&secret), "a bad signature");
        let age = shared::time::unix_now() - delivery.timestamp.parse::<u64>()?;
        assert!(age < 60, "timestamp {} s old", age);
        let body = delivery.json();
        assert_eq!(body["webhook_id"], id.as_str());
        delivered.push(body["event"].clone());
    }
    delivered.sort_by_key(|e| e["kind"].as_str().map(str::to_owned));
    ends.sort_by_key(|e| e["kind"].as_str().map(str::to_owned));
    assert_eq!(delivered, ends, "each terminal event, exactly as logged");
    // Only terminal events: nothing else arrives.
    assert!(
        tokio::time::timeout(Duration::from_millis(500), received.recv())
            .await
            .is_err()
    );

    // A receiver that fails twice gets the delivery at the third attempt; all are recorded.
    let (flaky_url, mut flaky) = receiver(2).await?;
    subscribe(
        &cluster,
        &key,
        json!({"url": flaky_url, "events": ["succeeded"]}),
    )
    .await?;
    let task = cluster
        .start_task(json!({"name": "again", "adapter": "mock", "args": {"steps": 1}}))
        .await?;
    let mut deliveries = Vec::new();
    for _ in 0..3 {
        deliveries.push(next(&mut flaky).await?.delivery);
    }
    assert!(!deliveries[0].is_empty(), "no X-Axon-Delivery");
    assert!(
        deliveries.iter().all(|d| *d == deliveries[0]),
        "every attempt names the same delivery: {deliveries:?}"
    );
    let pool = cluster.pg().await?;
    let task_id: uuid::Uuid = task.parse()?;
    let mut attempts: Vec<(i32, Option<i32>)> = Vec::new();
    let deadline = tokio::time::Instant::now() + e2e::PATIENCE;
    while attempts.len() < 3 && tokio::time::Instant::now() < deadline {
        attempts = sqlx::query_as(
            "SELECT a.attempt, a.status_code FROM webhook_attempts a
             JOIN webhook_deliveries d ON d.id = a.delivery_id
             JOIN webhooks w ON w.id = d.webhook_id
             WHERE d.task_id = $1 AND w.url = $2 ORDER BY a.attempt",
        )
        .bind(task_id)
        .bind(&flaky_url)
        .fetch_all(&pool)
        .await?;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(attempts, [(1, Some(500)), (2, Some(500)), (3, Some(204))]);
    let status: String = sqlx::query_scalar(
        "SELECT d.status FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id
         WHERE d.task_id = $1 AND w.url = $2",
    )
    .bind(task_id)
    .bind(&flaky_url)
    .fetch_one(&pool)
    .await?;
    assert_eq!(status, "delivered");
    Ok(())
}

#[tokio::test]
async fn private_targets_bad_input_other_tenants_and_read_only_keys_are_refused()
-> anyhow::Result<()> {
    let mut cluster = Cluster::start(Options::default()).await?;
    cluster.spawn_role("webhooks", "webhooks").await?;
    let key = cluster.api_key.clone();
    let refused = |body: Value| {
        let cluster = &cluster;
        let key = key.clone();
        async move {
            let (status, answer) = cluster.post("/api/webhooks", Some(&key), &body).await?;
            anyhow::Ok((
                status,
                answer["error"]["code"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            ))
        }
    };
    for url in [
        "http://hooks.example.com/axon",
        "https://127.0.0.1/hook",
        "https://localhost/hook",
        "https://[::1]/hook",
        "https://169.254.169.254/latest/meta-data",
        "https://10.0.0.1/hook",
        "https://user:password@hooks.example.com/",
        "not a url",
    ] {
        assert_eq!(
            refused(json!({"url": url})).await?,
            (400, "invalid_url".into()),
            "{url}"
        );
    }
    assert_eq!(
        refused(json!({"url": "https://hooks.example.com", "events": ["nope"]})).await?,
        (400, "invalid_events".into())
    );
    assert_eq!(
        refused(json!({"url": format!("https://x.example.com/{}", "a".repeat(3000))})).await?,
        (400, "invalid_url".into())
    );
    assert_eq!(
        refused(json!({"url": "https://x.example.com", "secret": "mine"})).await?,
        (400, "invalid_body".into())
    );
    let malformed = cluster
        .http
        .post(format!("{}/api/webhooks", cluster.base_url))
        .header("X-Api-Key", &key)
        .header("Content-Type", "application/json")
        .body("{\"url\": ")
        .send()
        .await?;
    assert_eq!(malformed.status(), 400);
    let body: Value = malformed.json().await?;
    assert!(body["error"]["message"].is_string(), "{body}");
    let (status, list) = cluster.get("/api/webhooks", Some(&key)).await?;
    assert_eq!(
        (status, list["webhooks"].clone()),
        (200, json!([])),
        "nothing was made"
    );

    // A target that resolves to a private address at delivery time is refused then too.
    let (url, mut received) = receiver(0).await?;
    let port = url
        .split(':')
        .nth(2)
        .and_then(|p| p.split('/').next())
        .context("port")?;
    let pool = cluster.pg().await?;
    let task = cluster
        .start_task(json!({"name": "t", "adapter": "mock", "args": {"steps": 1}}))
        .await?;
    let task_id: uuid::Uuid = task.parse()?;
    cluster.stream_to_end(&task).await?;
    let tenant: uuid::Uuid = sqlx::query_scalar("SELECT tenant_id FROM tasks WHERE task_id = $1")
        .bind(task_id)
        .fetch_one(&pool)
        .await?;
    sqlx::query(
        "INSERT INTO webhooks (id, tenant_id, url, events, secret)
         VALUES (gen_random_uuid(), $1, $2, '{succeeded}', 'whsec_test')",
    )
    .bind(tenant)
    .bind(format!("https://localhost:{port}/hook"))
    .execute(&pool)
    .await?;
    let second = cluster
        .start_task(json!({"name": "t2", "adapter": "mock", "args": {"steps": 1}}))
        .await?;
    cluster.stream_to_end(&second).await?;
    let mut error: Option<String> = None;
    let deadline = tokio::time::Instant::now() + e2e::PATIENCE;
    while error.is_none() && tokio::time::Instant::now() < deadline {
        error = sqlx::query_scalar(
            "SELECT a.error FROM webhook_attempts a JOIN webhook_deliveries d ON d.id = a.delivery_id
             WHERE d.task_id = $1",
        )
        .bind(second.parse::<uuid::Uuid>()?)
        .fetch_optional(&pool)
        .await?
        .flatten();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let error = error.context("no attempt recorded")?;
    assert!(error.contains("private"), "{error}");
    assert!(
        received.try_recv().is_err(),
        "the private target got a request"
    );

    // Another tenant's webhook is a 404 everywhere; a read-only key gets 403.
    let hook: uuid::Uuid =
        sqlx::query_scalar("SELECT id FROM webhooks WHERE tenant_id = $1 LIMIT 1")
            .bind(tenant)
            .fetch_one(&pool)
            .await?;
    let other = cluster.create_key("beta").await?;
    let (status, _) = cluster
        .post(
            &format!("/api/webhooks/{hook}/test"),
            Some(&other),
            &json!({}),
        )
        .await?;
    assert_eq!(status, 404);
    let deleted = cluster
        .http
        .delete(format!("{}/api/webhooks/{hook}", cluster.base_url))
        .header("X-Api-Key", &other)
        .send()
        .await?;
    assert_eq!(deleted.status(), 404);
    let (status, list) = cluster.get("/api/webhooks", Some(&other)).await?;
    assert_eq!((status, list["webhooks"].clone()), (200, json!([])));
    let reader = cluster.create_scoped_key("alpha", "tasks:read").await?;
    let reader = reader.as_str();
    let (status, body) = cluster.get("/api/webhooks", Some(reader)).await?;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("webhooks:*")
    );
    // The owner deletes it: 204, then 404.
    for expected in [204, 404] {
        let deleted = cluster
            .http
            .delete(format!("{}/api/webhooks/{hook}", cluster.base_url))
            .header("X-Api-Key", &key)
            .send()
            .await?;
        assert_eq!(deleted.status(), expected);
    }
    Ok(())
}

/// The intake consumer of an earlier version acked each message, and a consumer's ack policy
/// cannot change: the webhooks role makes it again from its first unacked event, so events
/// logged while it was down are still delivered.
#[tokio::test]
async fn an_intake_consumer_acking_one_by_one_is_made_again_without_losing_events()
-> anyhow::Result<()> {
    let mut cluster = Cluster::start(Options {
        env: vec![("WEBHOOK_ALLOW_PRIVATE", "true")],
        ..Options::default()
    })
    .await?;
    let log = cluster.js().await?.get_stream("AXON_LOG").await?;
    log.create_consumer(pull::Config {
        durable_name: Some("webhooks".to_owned()),
        filter_subject: "axon.log.>".to_owned(),
        deliver_policy: DeliverPolicy::New,
        ack_policy: AckPolicy::Explicit,
        ..Default::default()
    })
    .await?;
    let key = cluster.api_key.clone();
    let (url, mut received) = receiver(0).await?;
    let (id, _) = subscribe(&cluster, &key, json!({"url": url})).await?;
    let task = cluster
        .start_task(json!({"name": "while-down", "adapter": "mock", "args": {"steps": 1}}))
        .await?;
    let end = cluster
        .stream_to_end(&task)
        .await?
        .pop()
        .context("an end")?;

    cluster.spawn_role("webhooks", "webhooks").await?;
    let delivery = next(&mut received).await?.json();
    assert_eq!(delivery["webhook_id"], id.as_str());
    assert_eq!(delivery["event"], end);
    let info = log.consumer_info("webhooks").await?;
    assert_eq!(info.config.ack_policy, AckPolicy::All);
    Ok(())
}
