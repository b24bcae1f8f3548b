//! A task runs to its end and its chained log is the same in SSE, Redis, AXON_LOG and Postgres.

use e2e::{Cluster, Options, kinds};
use serde_json::json;

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
    cluster.assert_everywhere(&task, &events, true).await?;

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
            "args": {"command": "printf 'one\\ntwo\\n'; printf 'bad \\377 byte\\n' >&2; echo \"$GREETING\"; ulimit -n; ulimit -c; env | grep -c HMAC_SECRET", "env": {"GREETING": "hi"}}
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
        ["one", "two", "hi", "1024", "0", "0"],
        "the server's secrets are not passed on"
    );
    assert_eq!(lines("stderr"), ["bad \u{fffd} byte"]);
    let last = events.last().expect("events");
    assert_eq!(last["kind"], "failed", "grep -c exits 1 when it counts 0");
    assert_eq!(
        last["payload"],
        json!({"error": "exit code 1", "exit_code": 1})
    );
    cluster.assert_everywhere(&task, &events, true).await?;
    Ok(())
}

#[tokio::test]
async fn long_lines_are_split_and_nuls_dropped() -> anyhow::Result<()> {
    let cluster = Cluster::start(Options::default()).await?;
    // 20,000 x (three events), then exactly 8,192 y (one event).
    let command = "head -c 20000 /dev/zero | tr '\\0' x; echo; \
                   head -c 8192 /dev/zero | tr '\\0' y; echo; printf 'a\\000b\\n'";
    let task = cluster
        .start_task(json!({"name": "long", "adapter": "shell", "args": {"command": command}}))
        .await?;
    let events = cluster.stream_to_end(&task).await?;
    let lines: Vec<&str> = events
        .iter()
        .filter(|e| e["kind"] == "stdout")
        .filter_map(|e| e["payload"]["line"].as_str())
        .collect();
    let lengths: Vec<usize> = lines.iter().map(|l| l.len()).collect();
    assert_eq!(lengths, [8192, 8192, 3616, 8192, 2]);
    assert!(lines[..3].iter().all(|l| l.bytes().all(|b| b == b'x')));
    assert_eq!(lines[4], "ab");
    cluster.assert_everywhere(&task, &events, true).await?;
    Ok(())
}
