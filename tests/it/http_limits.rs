//! Limits of the HTTP front: open SSE streams per tenant, the header-read timeout, and the
//! cap on open connections; and the headers every response carries.

use std::time::Duration;

use e2e::{Cluster, Options};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn a_tenant_past_its_open_streams_gets_429_with_retry_after() -> anyhow::Result<()> {
    let cluster = Cluster::start(Options {
        env: vec![("SSE_MAX_STREAMS_PER_TENANT", "2")],
        ..Options::default()
    })
    .await?;
    let task = cluster
        .start_task(
            json!({"name": "long", "adapter": "mock", "args": {"steps": 1, "interval_ms": 600000}}),
        )
        .await?;
    let first = cluster.sse(&task, "", None).await?;
    let _second = cluster.sse(&task, "", None).await?;
    let url = format!("{}/mcp/tasks/{task}/stream", cluster.base_url);
    let third = cluster
        .http
        .get(&url)
        .header("X-Api-Key", &cluster.api_key)
        .send()
        .await?;
    assert_eq!(third.status(), 429);
    assert_eq!(
        third
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("5")
    );
    let body: serde_json::Value = third.json().await?;
    assert_eq!(body["error"]["code"], "too_many_streams");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("SSE_MAX_STREAMS_PER_TENANT")
    );

    // Another tenant is not affected.
    let beta = cluster.create_key("beta").await?;
    let (_, theirs) = cluster
        .post(
            "/mcp/start_task",
            Some(&beta),
            &json!({"name": "t", "adapter": "mock", "args": {"steps": 1, "interval_ms": 600000}}),
        )
        .await?;
    let theirs = theirs["task_id"].as_str().unwrap_or_default();
    let response = cluster
        .http
        .get(format!("{}/mcp/tasks/{theirs}/stream", cluster.base_url))
        .header("X-Api-Key", &beta)
        .send()
        .await?;
    assert_eq!(response.status(), 200);

    // A stream that ends gives its slot back.
    drop(first);
    e2e::eventually(|| async {
        cluster
            .http
            .get(&url)
            .header("X-Api-Key", &cluster.api_key)
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await?;
    Ok(())
}

/// The API port of `cluster`.
fn api_address(cluster: &Cluster) -> anyhow::Result<String> {
    let url = reqwest::Url::parse(&cluster.base_url)?;
    Ok(format!("127.0.0.1:{}", url.port().unwrap_or(80)))
}

/// Whether `tcp` answers (or closes) within `wait`: the bytes read, or `None` on silence.
async fn answer(tcp: &mut TcpStream, wait: Duration) -> Option<Vec<u8>> {
    let mut buffer = vec![0; 1024];
    match tokio::time::timeout(wait, tcp.read(&mut buffer)).await {
        Ok(Ok(n)) => Some(buffer[..n].to_vec()),
        Ok(Err(_)) => Some(Vec::new()),
        Err(_) => None,
    }
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_cut_off() -> anyhow::Result<()> {
    let cluster = Cluster::start(Options {
        env: vec![("HTTP_HEADER_READ_TIMEOUT_S", "1")],
        ..Options::default()
    })
    .await?;
    let mut slow = TcpStream::connect(api_address(&cluster)?).await?;
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await?;
    let answered = answer(&mut slow, Duration::from_secs(5)).await;
    assert!(
        answered.is_some(),
        "the server closed the connection after the header-read timeout"
    );
    Ok(())
}

#[tokio::test]
async fn connections_past_the_cap_wait_until_one_closes() -> anyhow::Result<()> {
    let cluster = Cluster::start(Options {
        env: vec![("HTTP_MAX_CONNECTIONS", "2")],
        ..Options::default()
    })
    .await?;
    let address = api_address(&cluster)?;
    let request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    // Keep-alive connections that got an answer stay open, each holding a place (the
    // harness's own client may hold one too), until one gets no answer: the cap.
    let mut open = Vec::new();
    let mut waiting = loop {
        let mut tcp = TcpStream::connect(&address).await?;
        tcp.write_all(request).await?;
        match answer(&mut tcp, Duration::from_millis(800)).await {
            Some(bytes) => {
                assert!(String::from_utf8_lossy(&bytes).starts_with("HTTP/1.1 200"));
                open.push(tcp);
                assert!(
                    open.len() <= 2,
                    "more connections than HTTP_MAX_CONNECTIONS"
                );
            }
            None => break tcp,
        }
    };
    assert!(!open.is_empty(), "the first connection is served");
    drop(open.pop());
    let answered = answer(&mut waiting, Duration::from_secs(5))
        .await
        .unwrap_or_default();
    assert!(
        String::from_utf8_lossy(&answered).starts_with("HTTP/1.1 200"),
        "answered once a connection closed: {}",
        String::from_utf8_lossy(&answered)
    );
    Ok(())
}

/// `axon_key_lookups_total{source="postgres"}` of the api process.
async fn postgres_key_lookups(cluster: &Cluster) -> anyhow::Result<u64> {
    let metrics = cluster
        .http
        .get(cluster.metrics_url("api"))
        .send()
        .await?
        .text()
        .await?;
    Ok(metrics
        .lines()
        .find(|l| l.starts_with("axon_key_lookups_total{source=\"postgres\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0))
}

#[tokio::test]
async fn a_flood_of_made_up_keys_barely_reaches_postgres_and_revocation_still_works()
-> anyhow::Result<()> {
    let cluster = Cluster::start(Options::default()).await?;
    // The cache has loaded the key once the first request is served from it.
    let list = format!("{}/mcp/tasks", cluster.base_url);
    let served = |key: String| {
        let (http, list) = (cluster.http.clone(), list.clone());
        async move {
            let response = http.get(&list).header("X-Api-Key", key).send().await;
            response.map(|r| r.status().as_u16()).unwrap_or(0)
        }
    };
    assert_eq!(served(cluster.api_key.clone()).await, 200);
    let before = postgres_key_lookups(&cluster).await?;
    let mut flood = Vec::new();
    for n in 0..500 {
        flood.push(served(format!("axon_{n:0>32}")));
    }
    let statuses = futures::future::join_all(flood).await;
    assert!(
        statuses.iter().all(|s| *s == 401),
        "every made-up key is refused"
    );
    let reached = postgres_key_lookups(&cluster).await? - before;
    assert!(
        reached <= 150,
        "{reached} of 500 made-up keys reached Postgres"
    );

    // A new key works at once; a revoked one stops within seconds.
    let fresh = cluster.create_key("alpha").await?;
    assert_eq!(served(fresh.clone()).await, 200);
    sqlx::query("UPDATE api_keys SET revoked_at = now() WHERE key_hash = $1")
        .bind(shared::auth::hash_key(&fresh))
        .execute(&cluster.pg().await?)
        .await?;
    e2e::eventually(|| async { served(fresh.clone()).await == 401 }).await?;
    Ok(())
}

#[tokio::test]
async fn every_response_has_security_headers_and_cors_follows_its_setting() -> anyhow::Result<()> {
    let cluster = Cluster::start(Options {
        env: vec![("CORS_ALLOWED_ORIGINS", "https://app.example.com")],
        ..Options::default()
    })
    .await?;
    for path in [
        "/healthz",
        "/mcp/tasks",
        "/no/such/route",
        "/.well-known/axontask/keys",
    ] {
        let response = cluster
            .http
            .get(format!("{}{path}", cluster.base_url))
            .send()
            .await?;
        let headers = response.headers();
        for (name, value) in [
            ("x-content-type-options", "nosniff"),
            ("x-frame-options", "DENY"),
            ("referrer-policy", "no-referrer"),
            (
                "content-security-policy",
                "default-src 'none'; frame-ancestors 'none'",
            ),
        ] {
            assert_eq!(
                headers.get(name).and_then(|v| v.to_str().ok()),
                Some(value),
                "{path}: {name}"
            );
        }
        let cache = headers
            .get("cache-control")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let expected = if path.starts_with("/.well-known") {
            "public, max-age=60"
        } else {
            "no-store"
        };
        assert_eq!(cache, expected, "{path}");
    }
    let preflight = |origin: &'static str| {
        cluster
            .http
            .request(
                reqwest::Method::OPTIONS,
                format!("{}/mcp/start_task", cluster.base_url),
            )
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "POST")
            .header(
                "Access-Control-Request-Headers",
                "authorization, content-type",
            )
            .send()
    };
    let allowed = preflight("https://app.example.com").await?;
    assert_eq!(
        allowed
            .headers()
            .get("access-control-allow-origin")
            .and_then(|v| v.to_str().ok()),
        Some("https://app.example.com")
    );
    let methods = allowed
        .headers()
        .get("access-control-allow-methods")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(methods.contains("POST"), "{methods}");
    let other = preflight("https://evil.example").await?;
    assert!(
        other.headers().get("access-control-allow-origin").is_none(),
        "another origin gets no CORS grant"
    );
    Ok(())
}
