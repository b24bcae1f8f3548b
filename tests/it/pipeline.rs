//! A task runs to its end and its chained log is the same in SSE, Redis, AXON_LOG and Postgres.

use e2e::{Cluster, Options, assert_chain, kinds};
use futures::StreamExt;
use serde_json::{Value, json};

async fn everywhere(cluster: &Cluster, task: &str, sse: &[Value]) -> anyhow::Result<()> {
    assert_chain(sse);
    // Postgres, the log of record.
    let pool = cluster.pg().await?;
    let rows: Vec<(i64, String, String, Value, String, String)> = sqlx::query_as(
        "SELECT seq, ts, kind, payload, hash_prev, hash_curr FROM task_events WHERE task_id = $1::uuid ORDER BY seq",
    )
    .bind(task)
    .fetch_all(&pool)
    .await?;
    assert_eq!(rows.len(), sse.len());
    for (row, event) in rows.iter().zip(sse) {
        assert_eq!(json!(row.0), event["seq"]);
        assert_eq!(json!(row.1), event["ts"]);
        assert_eq!(json!(row.2), event["kind"]);
        assert_eq!(row.3, event["payload"]);
        assert_eq!(json!(row.5), event["hash_curr"]);
    }
    // Redis: entry ids {seq}-0, fields kind and data.
    let mut redis = cluster.redis().await?;
    let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(format!("events:{task}"))
        .arg("-")
        .arg("+")
        .query_async(&mut redis)
        .await?;
    assert_eq!(entries.len(), sse.len());
    for ((id, fields), event) in entries.iter().zip(sse) {
        assert_eq!(id, &format!("{}-0", event["seq"]));
        let data = fields
            .iter()
            .find(|(k, _)| k == "data")
            .map(|(_, v)| v)
            .expect("data field");
        let kind = fields
            .iter()
            .find(|(k, _)| k == "kind")
            .map(|(_, v)| v)
            .expect("kind field");
        assert_eq!(&serde_json::from_str::<Value>(data)?, event);
        assert_eq!(json!(kind), event["kind"]);
    }
    // AXON_LOG, for other services: payload = envelope, Nats-Msg-Id = {task_id}:{seq}.
    let client = async_nats::connect(&cluster.nats_url).await?;
    let js = async_nats::jetstream::new(client);
    let stream = js.get_stream("AXON_LOG").await?;
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig {
            filter_subject: format!("axon.log.*.{task}.*"),
            ..Default::default()
        })
        .await?;
    let mut messages = consumer.messages().await?;
    for event in sse {
        let message = tokio::time::timeout(e2e::PATIENCE, messages.next())
            .await?
            .expect("a message")?;
        assert_eq!(
            message.subject.as_str(),
            format!(
                "axon.log.{}.{task}.{}",
                event["tenant_id"].as_str().expect("tenant"),
                event["kind"].as_str().expect("kind")
            )
        );
        let msg_id = message
            .headers
            .as_ref()
            .and_then(|h| h.get("Nats-Msg-Id"))
            .map(|v| v.to_string());
        assert_eq!(msg_id, Some(format!("{task}:{}", event["seq"])));
        assert_eq!(&serde_json::from_slice::<Value>(&message.payload)?, event);
    }
    let info = consumer_pending(&stream, task).await?;
    assert_eq!(
        info,
        sse.len() as u64,
        "AXON_LOG holds each event exactly once"
    );
    Ok(())
}

async fn consumer_pending(
    stream: &async_nats::jetstream::stream::Stream,
    task: &str,
) -> anyhow::Result<u64> {
    let mut consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig {
            filter_subject: format!("axon.log.*.{task}.*"),
            ..Default::default()
        })
        .await?;
    Ok(consumer.info().await?.num_pending)
}

#[tokio::test]
async fn a_mock_task_is_chained_alike_everywhere() -> anyhow::Result<()> {
    let cluster = Cluster::start(Options::default()).await?;
    let task = cluster
        .start_task(
            json!({"name": "mock", "adapter": "mock", "args": {"steps": 4, "interval_ms": 20}}),
        )
        .await?;
    let events = cluster.stream_to_end(&task).await?;
    assert_eq!(
        kinds(&events),
        [
            "requested",
            "started",
            "progress",
            "progress",
            "progress",
            "progress",
            "succeeded"
        ]
    );
    assert_eq!(
        events[2]["payload"],
        json!({"message": "step 1/4", "percent": 25})
    );
    assert_eq!(events[6]["payload"], json!({"result": {"steps": 4}}));
    everywhere(&cluster, &task, &events).await?;

    let (status, body) = cluster
        .get(&format!("/mcp/tasks/{task}/status"), Some(&cluster.api_key))
        .await?;
    assert_eq!(status, 200);
    assert_eq!(body["state"], "succeeded");
    assert_eq!(body["last_seq"], 7);
    Ok(())
}

#[tokio::test]
async fn a_shell_task_reports_lines_and_its_exit_code() -> anyhow::Result<()> {
    let cluster = Cluster::start(Options::default()).await?;
    let task = cluster
        .start_task(json!({
            "name": "shell", "adapter": "shell",
            "args": {"command": "printf 'one\\ntwo\\n'; printf 'bad \\377 byte\\n' >&2; echo \"$GREETING\"; env | grep -c HMAC_SECRET", "env": {"GREETING": "hi"}}
        }))
        .await?;
    let events = cluster.stream_to_end(&task).await?;
    let lines = |kind: &str| -> Vec<String> {
        events
            .iter()
            .filter(|e| e["kind"] == kind)
            .filter_map(|e| e["payload"]["line"].as_str().map(str::to_owned))
            .collect()
    };
    assert_eq!(
        lines("stdout"),
        ["one", "two", "hi", "0"],
        "the server's secrets are not passed on"
    );
    assert_eq!(lines("stderr"), ["bad \u{fffd} byte"]);
    let last = events.last().expect("events");
    assert_eq!(last["kind"], "failed", "grep -c exits 1 when it counts 0");
    assert_eq!(
        last["payload"],
        json!({"error": "exit code 1", "exit_code": 1})
    );
    everywhere(&cluster, &task, &events).await?;
    Ok(())
}
