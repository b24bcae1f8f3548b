//! Limits on what one task may do and on what the services keep: events and output per
//! run, stream ages, and Redis under a tiny `maxmemory`.

use std::time::Duration;

use e2e::{Cluster, Options, assert_chain, eventually, kinds, processes_of};
use serde_json::json;

#[tokio::test]
async fn a_task_past_its_event_or_output_limit_fails_naming_it() -> anyhow::Result<()> {
    let cluster = Cluster::start(Options {
        env: vec![
            ("TASK_MAX_EVENTS", "50"),
            ("TASK_MAX_OUTPUT_BYTES", "10000"),
        ],
        ..Options::default()
    })
    .await?;
    let chatty = cluster
        .start_task(
            json!({"name": "chatty", "adapter": "mock", "args": {"steps": 500, "interval_ms": 0}}),
        )
        .await?;
    let events = cluster.stream_to_end(&chatty).await?;
    assert_chain(&events);
    let last = events.last().expect("events");
    assert_eq!(last["kind"], "failed");
    let error = last["payload"]["error"].as_str().unwrap_or_default();
    assert!(error.contains("TASK_MAX_EVENTS (50)"), "{error}");
    // requested, started, at most 50 reported, failed.
    assert!(events.len() <= 53, "{} events", events.len());

    let loud = cluster
        .start_task(json!({"name": "loud", "adapter": "shell", "args": {
            "command": "id -u; while :; do printf '%01000d\\n' 0; done"
        }}))
        .await?;
    let events = cluster.stream_to_end(&loud).await?;
    let uid: u32 = events
        .iter()
        .find(|e| e["kind"] == "stdout")
        .and_then(|e| e["payload"]["line"].as_str())
        .unwrap_or_default()
        .parse()?;
    let last = events.last().expect("events");
    assert_eq!(last["kind"], "failed", "{last}");
    let error = last["payload"]["error"].as_str().unwrap_or_default();
    assert!(error.contains("TASK_MAX_OUTPUT_BYTES (10000)"), "{error}");
    let written: usize = events
        .iter()
        .filter_map(|e| e["payload"]["line"].as_str())
        .map(str::len)
        .sum();
    assert!(written <= 10_000, "{written} bytes logged");
    // Its processes were killed.
    eventually(|| async { processes_of(uid) == 0 }).await?;
    Ok(())
}

#[tokio::test]
async fn streams_keep_messages_for_their_configured_age() -> anyhow::Result<()> {
    let cluster = Cluster::start(Options {
        env: vec![("AXON_LOG_MAX_AGE_S", "3600")],
        ..Options::default()
    })
    .await?;
    let js = cluster.js().await?;
    let log = js
        .get_stream("AXON_LOG")
        .await?
        .info()
        .await?
        .config
        .max_age;
    assert_eq!(log, Duration::from_secs(3600));
    let axon = js.get_stream("AXON").await?.info().await?.config.max_age;
    assert_eq!(axon, Duration::from_secs(30 * 24 * 3600));
    Ok(())
}

#[tokio::test]
async fn the_scripts_redis_needs_a_password_and_evicts_instead_of_growing() -> anyhow::Result<()> {
    // The Redis scripts/services.sh started (REDIS_URL of the test run).
    let url = std::env::var("REDIS_URL")?;
    let mut anonymous = reqwest::Url::parse(&url)?;
    anonymous.set_password(None).ok();
    let mut stranger = redis::Client::open(anonymous.as_str())?
        .get_multiplexed_async_connection()
        .await?;
    let refused = redis::cmd("PING")
        .query_async::<String>(&mut stranger)
        .await
        .expect_err("no password, no access");
    assert!(refused.to_string().contains("NOAUTH"), "{refused}");
    let mut redis = redis::Client::open(url)?
        .get_multiplexed_async_connection()
        .await?;
    let maxmemory: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory")
        .query_async(&mut redis)
        .await?;
    assert_ne!(maxmemory[1], "0", "maxmemory is set");
    let policy: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory-policy")
        .query_async(&mut redis)
        .await?;
    assert_eq!(policy[1], "allkeys-lru");
    Ok(())
}

/// A number from Redis's `INFO section`.
async fn info(
    redis: &mut redis::aio::MultiplexedConnection,
    section: &str,
    field: &str,
) -> anyhow::Result<u64> {
    let text: String = redis::cmd("INFO").arg(section).query_async(redis).await?;
    let value = text
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .unwrap_or("0");
    Ok(value.trim().parse()?)
}

#[tokio::test]
async fn streams_complete_when_redis_has_a_tiny_maxmemory() -> anyhow::Result<()> {
    let cluster = Cluster::start(Options::default()).await?;
    let mut redis = cluster.redis().await?;
    // Room for about 300 KB of data above what an empty Redis uses; the tasks write 1.3 MB.
    let used = info(&mut redis, "memory", "used_memory").await?;
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg(used + 300_000)
        .query_async::<()>(&mut redis)
        .await?;
    let message = "x".repeat(300);
    let mut tasks = Vec::new();
    for name in ["first", "second"] {
        tasks.push(
            cluster
                .start_task(json!({"name": name, "adapter": "mock",
                    "args": {"steps": 2000, "interval_ms": 0, "message": message}}))
                .await?,
        );
    }
    for task in &tasks {
        let events = cluster.stream_to_end(task).await?;
        assert_chain(&events);
        assert_eq!(
            events.len(),
            2003,
            "requested, started, 2000 steps, succeeded"
        );
        assert_eq!(kinds(&events).last(), Some(&"succeeded"));
    }
    let evicted = info(&mut redis, "stats", "evicted_keys").await?;
    assert!(evicted > 0, "Redis evicted keys to stay within maxmemory");
    Ok(())
}
