//! Checks of a task's log that trust nothing of the server's code.

use futures::StreamExt;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::{Cluster, PATIENCE};

impl Cluster {
    /// Checks that the chained log `sse` of `task` verifies and is the same in Postgres,
    /// in AXON_LOG (each event once) and, if `in_redis`, in Redis.
    pub async fn assert_everywhere(
        &self,
        task: &str,
        sse: &[Value],
        in_redis: bool,
    ) -> anyhow::Result<()> {
        assert_chain(sse);
        // Postgres, the log of record.
        let pool = self.pg().await?;
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
        if in_redis {
            let mut redis = self.redis().await?;
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
        }
        // AXON_LOG, for other services: payload = envelope, Nats-Msg-Id = {task_id}:{seq}.
        let client = self.nats().await?;
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
            let message = tokio::time::timeout(PATIENCE, messages.next())
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
}

/// Events pending for an ordered consumer over a task's AXON_LOG subjects.
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

/// Checks a whole log independently of the server's code: seq 1..N, each `hash_prev` the
/// previous `hash_curr`, and each `hash_curr` = SHA-256 of the canonical JSON (computed
/// with a second RFC 8785 implementation) of the envelope without `hash_curr`.
pub fn assert_chain(events: &[Value]) {
    let mut prev = "0".repeat(64);
    for (i, event) in events.iter().enumerate() {
        assert_eq!(
            event["seq"],
            json!(i + 1),
            "seq has a gap or repeat: {events:?}"
        );
        assert_eq!(
            event["hash_prev"],
            json!(prev),
            "broken link at seq {}",
            i + 1
        );
        let mut unsealed = event.clone();
        let claimed = unsealed
            .as_object_mut()
            .and_then(|o| o.remove("hash_curr"))
            .expect("an envelope has hash_curr");
        let canonical = serde_json_canonicalizer::to_vec(&unsealed).expect("canonical JSON");
        let computed = hex::encode(Sha256::digest(&canonical));
        assert_eq!(
            claimed,
            json!(computed),
            "hash_curr of seq {} does not verify",
            i + 1
        );
        let ts = event["ts"].as_str().expect("ts");
        assert!(
            ts.len() == 27 && ts.ends_with('Z'),
            "ts {ts} is not 6-digit UTC"
        );
        prev = computed;
    }
}
