//! Rate limits, quotas by plan and usage counters (issue 8, items 5 and 6).

use std::time::Duration;

use anyhow::Context as _;
use e2e::{Cluster, Options, until_kind};
use reqwest::Response;
use serde_json::{Value, json};
use tokio::time::Instant;

/// GET `path` with `key`: the response (for its headers).
async fn get(cluster: &Cluster, path: &str, key: &str) -> anyhow::Result<Response> {
    Ok(cluster
        .http
        .get(format!("{}{path}", cluster.base_url))
        .header("X-Api-Key", key)
        .send()
        .await?)
}

fn header(response: &Response, name: &str) -> Option<u64> {
    response.headers().get(name)?.to_str().ok()?.parse().ok()
}

/// Requests until one is refused (at most `limit + 3`), each allowed one naming `limit`
/// (its tightest bucket's); the number allowed and the refusal.
async fn until_refused(
    cluster: &Cluster,
    key: &str,
    limit: u64,
) -> anyhow::Result<(u64, Response)> {
    for allowed in 0..limit + 3 {
        let response = get(cluster, "/mcp/tasks?limit=1", key).await?;
        if response.status() == 429 {
            return Ok((allowed, response));
        }
        assert_eq!(response.status(), 200, "{:?}", response.headers());
        assert_eq!(header(&response, "ratelimit-limit"), Some(limit));
        assert!(header(&response, "ratelimit-remaining").is_some());
        assert!(header(&response, "ratelimit-reset").is_some());
    }
    anyhow::bail!("no request was refused")
}

#[tokio::test]
async fn bursts_over_a_key_or_tenant_rate_get_429_until_retry_after() -> anyhow::Result<()> {
    let cluster = Cluster::start(Options {
        env: vec![("ENTRY_RATE_PER_S", "4"), ("ENTRY_TENANT_RATE_PER_S", "6")],
        ..Options::default()
    })
    .await?;
    let key = cluster.api_key.clone();
    // A key's burst passes (the bucket starts full), then it is refused.
    let (allowed, refused) = until_refused(&cluster, &key, 4).await?;
    assert!(allowed >= 4, "only {allowed} of a burst of 4 passed");
    let retry = header(&refused, "retry-after").context("Retry-After")?;
    assert!((1..=2).contains(&retry), "Retry-After {retry}");
    assert_eq!(header(&refused, "ratelimit-remaining"), Some(0));
    let body: Value = refused.json().await?;
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("per key") && message.contains("entry"),
        "{message}"
    );

    // Another key of the tenant has its own bucket, but the tenant's is nearly spent.
    let second = cluster.create_key("alpha").await?;
    let (allowed, refused) = until_refused(&cluster, &second, 6).await?;
    assert!(
        allowed < 4,
        "the tenant's bucket (6) let {allowed} more through"
    );
    assert_eq!(refused.status(), 429);

    // After waiting as long as Retry-After said, the next request passes.
    tokio::time::sleep(Duration::from_secs(retry)).await;
    let again = get(&cluster, "/mcp/tasks?limit=1", &key).await?;
    assert_eq!(again.status(), 200);
    // Health and the published keys are never limited.
    for _ in 0..10 {
        let health = cluster
            .http
            .get(format!("{}/.well-known/axontask/keys", cluster.base_url))
            .send()
            .await?;
        assert_eq!(health.status(), 200);
    }
    Ok(())
}

#[tokio::test]
async fn sign_in_and_requests_without_valid_credentials_are_limited_per_address()
-> anyhow::Result<()> {
    let cluster = Cluster::start(Options {
        env: vec![("AUTH_RATE_PER_MIN", "3"), ("ANON_RATE_PER_S", "2")],
        ..Options::default()
    })
    .await?;
    // Wrong keys (and resume-token streams) count against the address.
    let wrong = "axon_00000000000000000000000000000000";
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(get(&cluster, "/mcp/tasks", wrong).await?.status().as_u16());
    }
    assert_eq!(&statuses[..2], [401, 401], "{statuses:?}");
    assert!(statuses.contains(&429), "{statuses:?}");
    let login = json!({"email": "nobody@example.com", "password": "not the password at all"});
    for _ in 0..3 {
        let (status, body) = cluster.post("/auth/login", None, &login).await?;
        assert_eq!(status, 401, "{body}");
    }
    let refused = cluster
        .http
        .post(format!("{}/auth/login", cluster.base_url))
        .json(&login)
        .send()
        .await?;
    assert_eq!(refused.status(), 429);
    let retry = header(&refused, "retry-after").context("Retry-After")?;
    assert!((1..=20).contains(&retry), "Retry-After {retry}");
    let body: Value = refused.json().await?;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("sign-in requests a minute"),
        "{body}"
    );
    Ok(())
}

#[tokio::test]
async fn without_redis_the_limiter_fails_open_or_closed_as_configured() -> anyhow::Result<()> {
    for (setting, expected) in [("open", 200), ("closed", 503)] {
        let mut cluster = Cluster::start(Options {
            env: vec![("RATE_LIMIT_FAIL", setting)],
            ..Options::default()
        })
        .await?;
        cluster.kill_redis().await?;
        let key = cluster.api_key.clone();
        let response = get(&cluster, "/mcp/tasks?limit=1", &key).await?;
        assert_eq!(response.status(), expected, "RATE_LIMIT_FAIL={setting}");
        if expected == 503 {
            let body: Value = response.json().await?;
            assert_eq!(body["error"]["code"], "rate_limiter_unavailable", "{body}");
        }
    }
    Ok(())
}

/// The AXON stream sequence of a task's `started` event.
async fn started_seq(cluster: &Cluster, task: &str) -> anyhow::Result<u64> {
    let pool = cluster.pg().await?;
    let tenant: uuid::Uuid = sqlx::query_scalar("SELECT tenant_id FROM tasks WHERE task_id = $1")
        .bind(task.parse::<uuid::Uuid>()?)
        .fetch_one(&pool)
        .await?;
    let subject = shared::names::event_subject(
        shared::ids::TenantId(tenant),
        task.parse()?,
        shared::events::EventKind::Started,
    );
    let axon = cluster.js().await?.get_stream("AXON").await?;
    Ok(axon
        .get_last_raw_message_by_subject(&subject)
        .await?
        .sequence)
}

#[tokio::test]
async fn a_tenant_at_its_concurrency_is_refused_or_queued_and_served_when_one_ends()
-> anyhow::Result<()> {
    let cluster = Cluster::start(Options {
        env: vec![("ENTRY_CONCURRENCY", "2")],
        ..Options::default()
    })
    .await?;
    let long =
        json!({"name": "long", "adapter": "mock", "args": {"steps": 1, "interval_ms": 60000}});
    let first = cluster.start_task(long.clone()).await?;
    let second = cluster.start_task(long.clone()).await?;
    for task in [&first, &second] {
        let _started = until_kind(cluster.sse(task, "", None).await?, "started").await?;
    }
    let (status, body) = cluster
        .post("/mcp/start_task", Some(&cluster.api_key), &long)
        .await?;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "quota_exceeded");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("concurrency")
            && message.contains("entry")
            && message.contains("queue_if_busy"),
        "{message}"
    );

    let quick = json!({"name": "waits", "adapter": "mock", "args": {"steps": 1, "interval_ms": 1}, "queue_if_busy": true});
    let queued = cluster.start_task(quick).await?;
    let (status, _) = cluster.cancel(&first).await?;
    assert_eq!(status, 200);
    let canceled = Instant::now();
    let _started = until_kind(cluster.sse(&queued, "", None).await?, "started").await?;
    assert!(
        canceled.elapsed() < Duration::from_secs(3),
        "the queued task waited {:?} after a slot freed",
        canceled.elapsed()
    );
    // It started only after the first task ended: never three at once.
    assert!(started_seq(&cluster, &queued).await? > started_seq(&cluster, &second).await?);
    cluster.cancel(&second).await?;
    Ok(())
}

#[tokio::test]
async fn tasks_per_day_and_the_longest_timeout_follow_the_plan() -> anyhow::Result<()> {
    let cluster = Cluster::start(Options {
        env: vec![("ENTRY_TASKS_PER_DAY", "3"), ("ENTRY_MAX_TIMEOUT_S", "60")],
        ..Options::default()
    })
    .await?;
    let key = cluster.api_key.clone();
    let (status, body) = cluster
        .post(
            "/mcp/start_task",
            Some(&key),
            &json!({"name": "long", "adapter": "mock", "timeout_s": 61}),
        )
        .await?;
    assert_eq!(status, 429, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("max_timeout_s"),
        "{body}"
    );
    let quick = |n: usize| {
        json!({"name": format!("q{n}"), "adapter": "mock", "args": {"steps": 1, "interval_ms": 1},
               "idempotency_key": format!("day-{n}")})
    };
    let mut tasks = Vec::new();
    for n in 0..3 {
        tasks.push(cluster.start_task(quick(n)).await?);
    }
    // A retried start of a task that exists counts nothing.
    assert_eq!(cluster.start_task(quick(0)).await?, tasks[0]);
    let refused = cluster
        .http
        .post(format!("{}/mcp/start_task", cluster.base_url))
        .header("X-Api-Key", &key)
        .json(&quick(3))
        .send()
        .await?;
    assert_eq!(refused.status(), 429);
    let retry = header(&refused, "retry-after").context("Retry-After")?;
    assert!((1..=86_401).contains(&retry), "Retry-After {retry}");
    let body: Value = refused.json().await?;
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("tasks_per_day") && message.contains("00:00 UTC"),
        "{message}"
    );
    // A task started without timeout_s gets the plan's longest.
    let (_, status) = cluster
        .get(&format!("/mcp/tasks/{}/status", tasks[0]), Some(&key))
        .await?;
    assert_eq!(status["timeout_s"], 60, "{status}");
    Ok(())
}

#[tokio::test]
async fn usage_counters_equal_what_the_log_shows() -> anyhow::Result<()> {
    let cluster = Cluster::start(Options::default()).await?;
    let key = cluster.api_key.clone();
    let mut streamed_bytes = 0;
    for n in 0..3 {
        let task = cluster
            .start_task(json!({"name": format!("u{n}"), "adapter": "mock", "args": {"steps": 3, "interval_ms": 20}}))
            .await?;
        for event in cluster.stream_to_end(&task).await? {
            streamed_bytes += serde_json::to_string(&event)?.len();
        }
    }
    let pool = cluster.pg().await?;
    let (events, seconds): (i64, f64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM task_events),
                (SELECT sum(EXTRACT(EPOCH FROM ended_at - started_at))::float8 FROM tasks)",
    )
    .fetch_one(&pool)
    .await?;
    // Stream usage is written within a second.
    let deadline = Instant::now() + e2e::PATIENCE;
    let day = loop {
        let (status, usage) = cluster.get("/api/usage", Some(&key)).await?;
        assert_eq!(status, 200, "{usage}");
        let day = usage["days"][0].clone();
        if day["stream_connections"] == 3 {
            break day;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "usage never showed 3 streams: {usage}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(day["tasks_started"], 3, "{day}");
    assert_eq!(day["events"], events, "{day}");
    let counted = day["task_seconds"].as_f64().context("task_seconds")?;
    assert!((counted - seconds).abs() < 0.01, "{counted} vs {seconds}");
    let bytes = day["bytes_streamed"].as_u64().context("bytes")?;
    // The event data as sent; the test re-serialized it, which may space it differently.
    let sent = streamed_bytes as u64;
    assert!(bytes > sent / 2 && bytes < sent * 2, "{bytes} vs {sent}");

    let (status, body) = cluster
        .get("/api/usage?from=2026-01-02&to=2026-01-01", Some(&key))
        .await?;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (400, json!("invalid_range"))
    );
    let (status, _) = cluster.get("/api/usage?from=yesterday", Some(&key)).await?;
    assert_eq!(status, 400);
    let (status, body) = cluster
        .get("/api/usage?from=1990-01-01&to=1990-01-02", Some(&key))
        .await?;
    assert_eq!((status, body["days"].clone()), (200, json!([])));
    Ok(())
}
