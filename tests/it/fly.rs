//! The fly adapter against a local server answering as the Fly.io Machines API documents
//! (`tests/fly_api.rs`; Fly.io cannot be reached from these machines): a Machine made,
//! started and exiting 0, a failing one, cancel, and the API's refusals (401, 422).

use e2e::fly_api::{FlyApi, TOKEN};
use e2e::{Cluster, Options, assert_chain, collect_to_end, kinds, until_kind};
use serde_json::{Value, json};

/// A cluster whose workers run fly tasks on `api` with `token`.
async fn cluster_on(api: &FlyApi, token: &'static str) -> anyhow::Result<Cluster> {
    let url: &'static str = Box::leak(api.url.clone().into_boxed_str());
    Cluster::start(Options {
        adapters: "mock,fly",
        env: vec![
            ("FLY_API_HOSTNAME", url),
            ("FLY_API_TOKEN", token),
            ("FLY_APPS", "demo"),
        ],
        ..Options::default()
    })
    .await
}

/// Runs a fly task with `image` in app `demo` to its end.
async fn run(cluster: &Cluster, image: &str) -> anyhow::Result<Vec<Value>> {
    let task = cluster
        .start_task(json!({"name": "deploy", "adapter": "fly",
            "args": {"app": "demo", "image": image, "region": "ord",
                     "config": {"guest": {"cpus": 1, "memory_mb": 256}}}}))
        .await?;
    let events = cluster.stream_to_end(&task).await?;
    assert_chain(&events);
    Ok(events)
}

fn progress(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["kind"] == "progress")
        .filter_map(|e| e["payload"]["message"].as_str())
        .map(|m| m.rsplit(' ').next().unwrap_or_default().to_owned())
        .collect()
}

fn end(events: &[Value]) -> &Value {
    &events.last().expect("events")["payload"]
}

#[tokio::test]
async fn a_machine_is_made_followed_to_its_exit_and_destroyed() -> anyhow::Result<()> {
    let api = FlyApi::start().await?;
    let cluster = cluster_on(&api, TOKEN).await?;
    let events = run(&cluster, "exit-0").await?;
    assert_eq!(kinds(&events).last(), Some(&"succeeded"), "{events:?}");
    assert_eq!(end(&events)["result"], json!({"exit_code": 0}));
    assert_eq!(progress(&events), ["created", "started", "stopped"]);
    let configs = api.configs();
    let (id, config) = configs.iter().next().expect("one Machine made");
    assert_eq!(config["image"], "exit-0");
    assert_eq!(config["restart"], json!({"policy": "no"}));
    assert_eq!(config["guest"]["memory_mb"], 256);
    assert_eq!(config["metadata"]["axontask_attempt"], "1");
    assert!(
        api.requests()
            .contains(&format!("DELETE /v1/apps/demo/machines/{id}")),
        "destroyed at the end: {:?}",
        api.requests()
    );

    let events = run(&cluster, "exit-3").await?;
    assert_eq!(kinds(&events).last(), Some(&"failed"));
    assert_eq!(
        end(&events),
        &json!({"error": "exit code 3", "exit_code": 3})
    );
    let events = run(&cluster, "oom").await?;
    let error = end(&events)["error"].as_str().unwrap_or_default();
    assert!(error.starts_with("out of memory"), "{error}");
    Ok(())
}

#[tokio::test]
async fn cancel_stops_and_destroys_the_machine() -> anyhow::Result<()> {
    let api = FlyApi::start().await?;
    let cluster = cluster_on(&api, TOKEN).await?;
    let task = cluster
        .start_task(json!({"name": "serve", "adapter": "fly",
            "args": {"app": "demo", "image": "sleep"}}))
        .await?;
    let stream = cluster.sse(&task, "", None).await?;
    let (mut seen, stream) = until_kind(stream, "progress").await?;
    let (more, stream) = until_kind(stream, "progress").await?;
    seen.extend(more);
    assert_eq!(progress(&seen), ["created", "started"]);
    assert_eq!(cluster.cancel(&task).await?.0, 200);
    seen.extend(collect_to_end(stream).await?);
    assert_eq!(kinds(&seen).last(), Some(&"canceled"), "{seen:?}");
    let id = api.configs().into_keys().next().expect("one Machine");
    let requests = api.requests();
    let stop = requests
        .iter()
        .position(|r| *r == format!("POST /v1/apps/demo/machines/{id}/stop"));
    let destroy = requests
        .iter()
        .position(|r| *r == format!("DELETE /v1/apps/demo/machines/{id}"));
    assert!(
        stop.is_some() && stop < destroy,
        "stopped, then destroyed: {requests:?}"
    );
    Ok(())
}

#[tokio::test]
async fn a_worker_starting_destroys_machines_of_finished_attempts() -> anyhow::Result<()> {
    let api = FlyApi::start().await?;
    let mut cluster = cluster_on(&api, TOKEN).await?;
    let events = run(&cluster, "exit-0").await?;
    let (task, tenant) = (events[0]["task_id"].clone(), events[0]["tenant_id"].clone());
    let metadata = |attempt: &str| json!({"axontask_task_id": task, "axontask_tenant_id": tenant, "axontask_attempt": attempt});
    // What a worker killed after the end, and before the destroy, leaves.
    let finished = api.leave(json!({"image": "sleep", "metadata": metadata("1")}));
    // A live attempt's Machine stays (its worker may be alive).
    let live = cluster
        .start_task(
            json!({"name": "serve", "adapter": "fly", "args": {"app": "demo", "image": "sleep"}}),
        )
        .await?;
    let (_, stream) = until_kind(cluster.sse(&live, "", None).await?, "progress").await?;
    cluster.spawn_role("worker-2", "worker").await?;
    e2e::eventually(|| async { api.destroyed(&finished) }).await?;
    let live_machine = api
        .configs()
        .into_iter()
        .find(|(_, c)| c["metadata"]["axontask_task_id"] == live.as_str())
        .map(|(id, _)| id)
        .expect("the live task's Machine");
    assert!(
        !api.destroyed(&live_machine),
        "a live attempt's Machine stays"
    );
    assert_eq!(cluster.cancel(&live).await?.0, 200);
    let events = collect_to_end(stream).await?;
    assert_eq!(kinds(&events).last(), Some(&"canceled"));
    assert!(api.destroyed(&live_machine));
    Ok(())
}

#[tokio::test]
async fn the_api_s_refusals_end_the_task_with_a_reason() -> anyhow::Result<()> {
    let api = FlyApi::start().await?;
    let cluster = cluster_on(&api, "not-the-token").await?;
    let events = run(&cluster, "exit-0").await?;
    assert_eq!(kinds(&events).last(), Some(&"failed"));
    let error = end(&events)["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("(401: You must be authenticated") && error.contains("FLY_API_TOKEN"),
        "{error}"
    );
    assert!(!error.contains("not-the-token"), "never the token: {error}");

    let cluster = cluster_on(&api, TOKEN).await?;
    let events = run(&cluster, "invalid-image").await?;
    let error = end(&events)["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("(422: invalid config.image") && error.contains("check the task's image"),
        "{error}"
    );
    // Bad args never reach the API: a missing app, an app the operator did not list (a
    // Machine gets its app's secrets), a config key that would reach the app's volumes.
    let before = api.requests().len();
    for (args, names) in [
        (json!({"image": "busybox"}), "app"),
        (json!({"app": "production", "image": "busybox"}), "FLY_APPS"),
        (
            json!({"app": "demo", "image": "busybox", "config": {"mounts": [{"volume": "vol_1"}]}}),
            "config.mounts",
        ),
    ] {
        let (status, answer) = cluster
            .post(
                "/mcp/start_task",
                Some(&cluster.api_key),
                &json!({"name": "x", "adapter": "fly", "args": args}),
            )
            .await?;
        assert_eq!(status, 400, "{answer}");
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(names), "{message}");
    }
    assert_eq!(api.requests().len(), before);
    Ok(())
}
