//! When stream AXON is not the stream the projector's offset belongs to (recreated, or its
//! tail lost), the projector stops and says what to do instead of skipping messages.

use e2e::{Cluster, Options, eventually, kinds};
use serde_json::{Value, json};

#[tokio::test]
async fn a_recreated_axon_stream_halts_the_projector_instead_of_skipping() -> anyhow::Result<()> {
    let cluster = Cluster::start(Options::default()).await?;
    let before = cluster
        .start_task(
            json!({"name": "before", "adapter": "mock", "args": {"steps": 3, "interval_ms": 1}}),
        )
        .await?;
    cluster.stream_to_end(&before).await?;

    // The stream is deleted and created again (a lost volume, an operator's mistake).
    let js = cluster.js().await?;
    js.delete_stream("AXON").await?;
    shared::nats::ensure_streams(&js, Default::default()).await?;
    // A new task lands in the new stream, at a sequence below the projector's offset.
    let after = cluster
        .start_task(
            json!({"name": "after", "adapter": "mock", "args": {"steps": 2, "interval_ms": 1}}),
        )
        .await?;

    let ready = format!("{}/readyz", cluster.url("projector"));
    let http = cluster.http.clone();
    let readiness = || async {
        let response = http.get(&ready).send().await.ok()?;
        let status = response.status().as_u16();
        Some((status, response.json::<Value>().await.unwrap_or_default()))
    };
    let halted =
        eventually(|| async { readiness().await.is_some_and(|(status, _)| status == 503) }).await;
    assert!(
        halted.is_ok(),
        "the projector never halted; its log:\n{}",
        cluster.log("projector")
    );
    let (_, body) = readiness().await.unwrap_or_default();
    assert_eq!(body["error"]["code"], "operator_action_needed", "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("created again"), "{message}");
    assert!(message.contains("UPDATE projector_offsets"), "{message}");
    assert!(
        cluster.log("projector").contains("projector halted"),
        "the halt is logged"
    );

    // The operator follows the message: the new stream is projected from its start.
    sqlx::query(
        "UPDATE projector_offsets SET applied_seq = 0, fanned_seq = 0, stream_created = NULL",
    )
    .execute(&cluster.pg().await?)
    .await?;
    eventually(|| async { readiness().await.is_some_and(|(status, _)| status == 200) }).await?;
    // The worker's consumer went with the old stream: the worker makes it again.
    let events = cluster.stream_to_end(&after).await?;
    assert_eq!(
        kinds(&events).last(),
        Some(&"succeeded"),
        "nothing was skipped"
    );
    Ok(())
}
