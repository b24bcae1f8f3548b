//! Receipts, the tenant transparency log and `axontask verify` (§3.3, §3.3a, §3.10):
//! every terminal kind verifies from every source, and each kind of tampering is found
//! with its reason and seq.

use anyhow::Context;
use e2e::mcp::Session;
use e2e::{Cluster, Options, is_terminal};
use serde_json::{Value, json};

/// Runs `axontask verify ARGS --json`: the exit code and the verdict.
async fn verify(cluster: &Cluster, args: &[&str]) -> anyhow::Result<(i32, Value)> {
    let mut all = vec!["verify", "--json"];
    all.extend_from_slice(args);
    let (code, out) = cluster.run(&all).await?;
    let json_end = out.rfind('}').map_or(0, |i| i + 1);
    let verdict = serde_json::from_str(&out[..json_end])
        .with_context(|| format!("verify printed no verdict (exit {code}):\n{out}"))?;
    Ok((code, verdict))
}

/// Polls `check` every 20 ms until it gives a value or [`e2e::PATIENCE`] runs out.
async fn found<T, F, Fut>(what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + e2e::PATIENCE;
    while tokio::time::Instant::now() < deadline {
        if let Some(value) = check().await {
            return Ok(value);
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    anyhow::bail!("{what}: not found within {:?}", e2e::PATIENCE)
}

/// Waits until the tenant's signed head holds `size` receipts; returns it.
async fn head_of_size(cluster: &Cluster, key: &str, size: u64) -> anyhow::Result<Value> {
    found(&format!("a signed head of size {size}"), || async move {
        let (_, body) = cluster.get("/api/log/head", Some(key)).await.ok()?;
        (body["head"]["tree_size"].as_u64()? >= size).then_some(body)
    })
    .await
}

/// Waits for the task's end.
async fn ended(cluster: &Cluster, task: &str) -> anyhow::Result<Vec<Value>> {
    let events = cluster.stream_to_end(task).await?;
    anyhow::ensure!(events.last().is_some_and(is_terminal), "{task} did not end");
    Ok(events)
}

fn failure(verdict: &Value) -> (&str, Option<u64>) {
    (
        verdict["failure"]["reason"].as_str().unwrap_or("none"),
        verdict["failure"]["seq"].as_u64(),
    )
}

#[tokio::test]
async fn every_terminal_kind_verifies_from_every_source() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(Options {
        workers: 0,
        ..Options::default()
    })
    .await?;
    let key = cluster.api_key.clone();
    // Canceled while pending: no worker runs yet.
    let pending = cluster
        .start_task(json!({"name": "p", "adapter": "mock", "args": {"steps": 1}}))
        .await?;
    assert_eq!(cluster.cancel(&pending).await?.0, 200);
    ended(&cluster, &pending).await?;
    let (status, body) = cluster
        .get(&format!("/mcp/tasks/{pending}/receipt"), Some(&key))
        .await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["receipt"]["state"], "canceled");
    cluster.spawn_role("worker-1", "worker").await?;

    let succeeded = cluster
        .start_task(json!({"name": "s", "adapter": "mock", "args": {"steps": 3, "interval_ms": 1}}))
        .await?;
    let failed = cluster
        .start_task(json!({"name": "f", "adapter": "mock", "args": {"steps": 3, "fail_at": 2, "interval_ms": 1}}))
        .await?;
    let timeout = cluster
        .start_task(json!({"name": "t", "adapter": "mock", "timeout_s": 1, "args": {"steps": 100, "interval_ms": 1000}}))
        .await?;
    let running = cluster
        .start_task(
            json!({"name": "c", "adapter": "mock", "args": {"steps": 100, "interval_ms": 1000}}),
        )
        .await?;
    // While it runs, there is no receipt yet, and the answer says why.
    let (status, body) = cluster
        .get(&format!("/mcp/tasks/{running}/receipt"), Some(&key))
        .await?;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("task_not_finished"))
    );
    // Tasks that end while the projector is down get their receipts when it is back.
    cluster.kill("projector").await?;
    assert_eq!(cluster.cancel(&running).await?.0, 200);
    cluster.spawn_role("projector", "projector").await?;
    for task in [&succeeded, &failed, &timeout, &running] {
        ended(&cluster, task).await?;
    }
    let head = head_of_size(&cluster, &key, 5).await?;
    assert_eq!(head["alg"], "Ed25519");

    let tasks = [
        (&pending, "canceled"),
        (&succeeded, "succeeded"),
        (&failed, "failed"),
        (&timeout, "timeout"),
        (&running, "canceled"),
    ];
    let dir = tempfile::tempdir()?;
    let jwks_url = format!("{}/.well-known/axontask/keys", cluster.base_url);
    let session = Session::open(&format!("{}/mcp", cluster.base_url), &key).await?;
    for (task, state) in tasks {
        let api = ["--api", &cluster.base_url, "--key", &key, "--task", task];
        let (code, verdict) = verify(&cluster, &api).await?;
        assert_eq!(
            (code, verdict["verdict"].as_str()),
            (0, Some("verified")),
            "{verdict:#}"
        );
        assert_eq!(verdict["state"], state);

        let (code, verdict) = verify(
            &cluster,
            &["--database-url", &cluster.database_url, "--task", task],
        )
        .await?;
        assert_eq!(
            (code, verdict["verdict"].as_str()),
            (0, Some("verified")),
            "{verdict:#}"
        );

        // Events from AXON_LOG; receipt, keys and log from the API.
        let mut nats = vec!["--nats", &cluster.nats_url];
        nats.extend_from_slice(&api);
        let (code, verdict) = verify(&cluster, &nats).await?;
        assert_eq!(
            (code, verdict["verdict"].as_str()),
            (0, Some("verified")),
            "{verdict:#}"
        );

        // An export, a saved receipt and the published keys, offline: all but the log.
        let export = dir.path().join(format!("{task}.ndjson"));
        let lines = cluster
            .http
            .get(format!("{}/mcp/tasks/{task}/events", cluster.base_url))
            .header("X-Api-Key", &key)
            .header("Accept", "application/x-ndjson")
            .send()
            .await?
            .text()
            .await?;
        std::fs::write(&export, lines)?;
        let (_, receipt) = cluster
            .get(&format!("/mcp/tasks/{task}/receipt"), Some(&key))
            .await?;
        let receipt_file = dir.path().join(format!("{task}.receipt.json"));
        std::fs::write(&receipt_file, receipt.to_string())?;
        let (export, receipt_file) = (
            export.display().to_string(),
            receipt_file.display().to_string(),
        );
        let offline = [
            "--file",
            &export,
            "--receipt",
            &receipt_file,
            "--keys",
            &jwks_url,
        ];
        let (code, verdict) = verify(&cluster, &offline).await?;
        assert_eq!(
            (code, verdict["verdict"].as_str()),
            (3, Some("incomplete")),
            "{verdict:#}"
        );
        assert_eq!(verdict["checks"][2]["status"], "skipped", "{verdict:#}");
        let mut with_log = offline.to_vec();
        with_log.extend_from_slice(&["--api", &cluster.base_url, "--key", &key]);
        let (code, verdict) = verify(&cluster, &with_log).await?;
        assert_eq!(
            (code, verdict["verdict"].as_str()),
            (0, Some("verified")),
            "{verdict:#}"
        );

        // And docs/audit.md's Python checker agrees.
        let saved = |name: &str, value: &Value| -> anyhow::Result<String> {
            let path = dir.path().join(format!("{task}.{name}.json"));
            std::fs::write(&path, value.to_string())?;
            Ok(path.display().to_string())
        };
        let (_, jwks) = cluster.get("/.well-known/axontask/keys", None).await?;
        let (_, inclusion) = cluster
            .get(
                &format!("/api/log/proof/inclusion?task_id={task}&tree_size=5"),
                Some(&key),
            )
            .await?;
        let (code, out) = python_checker(vec![
            export.clone(),
            receipt_file.clone(),
            saved("keys", &jwks)?,
            saved("head", &head)?,
            saved("inclusion", &inclusion)?,
        ])
        .await?;
        assert_eq!(code, 0, "{out}");
        assert!(out.contains(&format!(", {state}, leaf")), "{out}");

        // The API's own verdict is the same, and MCP's.
        let (status, verdict) = cluster
            .get(&format!("/mcp/tasks/{task}/verify"), Some(&key))
            .await?;
        assert_eq!(
            (status, verdict["verdict"].as_str()),
            (200, Some("verified")),
            "{verdict:#}"
        );
        let answer = session
            .call_tool("verify_task", json!({"task_id": task}))
            .await?;
        let result = &answer["result"];
        assert_eq!(result["structuredContent"], verdict, "{answer}");
        assert_eq!(result["isError"], false, "{answer}");
    }

    // Every head is on AXON_HEADS too.
    let tenant = head["head"]["tenant_id"].as_str().context("tenant")?;
    let stream = cluster.js().await?.get_stream("AXON_HEADS").await?;
    let subject = format!("axon.loghead.{tenant}");
    let last: Value = found("the head of size 5 on AXON_HEADS", || async {
        let message = stream
            .get_last_raw_message_by_subject(&subject)
            .await
            .ok()?;
        let head: Value = serde_json::from_slice(&message.payload).ok()?;
        (head["head"]["tree_size"] == 5).then_some(head)
    })
    .await?;
    assert_eq!(last, head_of_size(&cluster, &key, 5).await?);
    Ok(())
}

/// `verify` with owned arguments.
async fn run(cluster: &Cluster, args: Vec<String>) -> anyhow::Result<(i32, Value)> {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    verify(cluster, &args).await
}

/// Arguments to verify `task` from Postgres.
fn db(cluster: &Cluster, task: &str) -> Vec<String> {
    ["--database-url", &cluster.database_url, "--task", task]
        .map(str::to_owned)
        .to_vec()
}

/// Arguments to verify `task` through the API.
fn api(cluster: &Cluster, task: &str) -> Vec<String> {
    [
        "--api",
        &cluster.base_url,
        "--key",
        &cluster.api_key,
        "--task",
        task,
    ]
    .map(str::to_owned)
    .to_vec()
}

/// Runs `sql` on the cluster's database with the append-only triggers off, as an attacker
/// with the database would.
async fn tamper(pool: &sqlx::PgPool, sql: &str) -> anyhow::Result<()> {
    for table in ["task_events", "task_receipts", "log_nodes"] {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "ALTER TABLE {table} DISABLE TRIGGER USER"
        )))
        .execute(pool)
        .await?;
    }
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(pool)
        .await?;
    Ok(())
}

#[tokio::test]
async fn each_tampering_is_found_with_its_reason_and_seq() -> anyhow::Result<()> {
    use shared::audit::merkle::{self, Frontier};
    use shared::audit::signed::{Head, SignedReceipt};
    use shared::audit::signer::Signer;

    let cluster = Cluster::start(Options::default()).await?;
    let key = cluster.api_key.clone();
    let mut tasks = Vec::new();
    // Six events each: requested, started, three progress, succeeded.
    let mock = json!({"name": "m", "adapter": "mock", "args": {"steps": 3, "interval_ms": 1}});
    for _ in 0..7 {
        tasks.push(cluster.start_task(mock.clone()).await?);
    }
    for task in &tasks {
        ended(&cluster, task).await?;
    }
    let saved_head = head_of_size(&cluster, &key, 7).await?;
    let last = cluster.start_task(mock.clone()).await?;
    ended(&cluster, &last).await?;
    head_of_size(&cluster, &key, 8).await?;

    let dir = tempfile::tempdir()?;
    let save = |name: &str, value: &Value| -> anyhow::Result<String> {
        let path = dir.path().join(name);
        std::fs::write(&path, value.to_string())?;
        Ok(path.display().to_string())
    };
    let mut receipts = Vec::new();
    for task in &tasks {
        let (status, receipt) = cluster
            .get(&format!("/mcp/tasks/{task}/receipt"), Some(&key))
            .await?;
        assert_eq!(status, 200);
        receipts.push(receipt);
    }
    let pool = cluster.pg().await?;

    // Changes to the events of tasks 0 to 3, each found at its seq from Postgres.
    let (t0, t1, t2, t3) = (&tasks[0], &tasks[1], &tasks[2], &tasks[3]);
    let cases = [
        (
            t0,
            format!(
                "UPDATE task_events SET payload = '{{\"percent\":1}}' WHERE task_id = '{t0}' AND seq = 3"
            ),
            ("hash_mismatch", Some(3)),
        ),
        (
            t1,
            format!("DELETE FROM task_events WHERE task_id = '{t1}' AND seq = 3"),
            ("gap", Some(3)),
        ),
        (
            t2,
            format!(
                "UPDATE task_events e SET ts = o.ts, kind = o.kind, payload = o.payload,
                        hash_prev = o.hash_prev, hash_curr = o.hash_curr
                 FROM task_events o WHERE e.task_id = '{t2}' AND o.task_id = '{t2}'
                   AND ((e.seq = 3 AND o.seq = 4) OR (e.seq = 4 AND o.seq = 3))"
            ),
            ("wrong_hash_prev", Some(3)),
        ),
        // The last event dropped: the chain is whole, but the receipt covers seq 6.
        (
            t3,
            format!("DELETE FROM task_events WHERE task_id = '{t3}' AND seq = 6"),
            ("receipt_mismatch", Some(6)),
        ),
    ];
    for (task, sql, expected) in cases {
        tamper(&pool, &sql).await?;
        let (code, verdict) = run(&cluster, db(&cluster, task)).await?;
        assert_eq!((code, failure(&verdict)), (1, expected), "{verdict:#}");
    }

    // A receipt moved to another task: as a file, and in the database.
    let moved = save("moved.json", &receipts[4])?;
    let mut args = api(&cluster, &tasks[5]);
    args.extend(["--receipt".into(), moved]);
    let (code, verdict) = run(&cluster, args).await?;
    assert_eq!(
        (code, failure(&verdict).0),
        (1, "receipt_mismatch"),
        "{verdict:#}"
    );
    let (a, b) = (&tasks[4], &tasks[5]);
    tamper(&pool, &format!(
        "DELETE FROM task_receipts WHERE task_id = '{b}'; UPDATE task_receipts SET task_id = '{b}' WHERE task_id = '{a}'")).await?;
    let (code, verdict) = run(&cluster, db(&cluster, b)).await?;
    assert_eq!(
        (code, failure(&verdict).0),
        (1, "bad_signature"),
        "{verdict:#}"
    );

    // A receipt signed by a key that is not published, and one whose signature is wrong.
    let stranger = Signer::from_seed([9; 32]);
    let mut forged: SignedReceipt = serde_json::from_value(receipts[6].clone())?;
    let original = forged.clone();
    forged.receipt.key_id = stranger.public().kid.clone();
    let forged = forged.receipt.sign(&stranger);
    let mut args = api(&cluster, &tasks[6]);
    args.extend([
        "--receipt".into(),
        save("stranger.json", &serde_json::to_value(&forged)?)?,
    ]);
    let (code, verdict) = run(&cluster, args).await?;
    assert_eq!(
        (code, failure(&verdict).0),
        (1, "unknown_key"),
        "{verdict:#}"
    );
    let mut wrong = original.clone();
    wrong.receipt.issued_at = "2020-01-01T00:00:00.000000Z".into();
    let mut args = api(&cluster, &tasks[6]);
    args.extend([
        "--receipt".into(),
        save("wrong.json", &serde_json::to_value(&wrong)?)?,
    ]);
    let (code, verdict) = run(&cluster, args).await?;
    assert_eq!(
        (code, failure(&verdict).0),
        (1, "bad_signature"),
        "{verdict:#}"
    );

    // A task deleted whole: its saved receipt is in the log, the task is gone.
    let t = &tasks[6];
    tamper(
        &pool,
        &format!(
            "DELETE FROM task_events WHERE task_id = '{t}'; DELETE FROM tasks WHERE task_id = '{t}'"
        ),
    )
    .await?;
    let mut args = api(&cluster, t);
    args.extend(["--receipt".into(), save("deleted.json", &receipts[6])?]);
    let (code, verdict) = run(&cluster, args).await?;
    assert_eq!(
        (code, failure(&verdict).0),
        (1, "task_missing"),
        "{verdict:#}"
    );
    assert_eq!(
        verdict["checks"][2]["status"], "ok",
        "the log still holds it: {verdict:#}"
    );
    let (code, verdict) = run(&cluster, db(&cluster, t)).await?;
    assert_eq!(
        (code, failure(&verdict).0),
        (1, "task_missing"),
        "{verdict:#}"
    );

    // The tree rewritten with the signing key: leaf 2 replaced, every node and the head
    // re-signed. Today's head verifies alone, but not against the head saved before.
    let tenant = saved_head["head"]["tenant_id"]
        .as_str()
        .context("tenant")?
        .to_owned();
    let leaves: Vec<(Vec<u8>,)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT hash FROM log_nodes WHERE tenant_id = '{tenant}' AND level = 0 ORDER BY idx"
    )))
    .fetch_all(&pool)
    .await?;
    let mut frontier = Frontier::default();
    let mut nodes = Vec::new();
    for (i, (leaf,)) in leaves.iter().enumerate() {
        let leaf = if i == 2 {
            merkle::leaf_hash(b"forged")
        } else {
            leaf.as_slice().try_into()?
        };
        nodes.extend(frontier.append(leaf));
    }
    tamper(&pool, &format!("DELETE FROM log_nodes WHERE tenant_id = '{tenant}'; DELETE FROM log_heads WHERE tenant_id = '{tenant}' AND tree_size = 8")).await?;
    for ((level, idx), hash) in &nodes {
        sqlx::query(
            "INSERT INTO log_nodes (tenant_id, level, idx, hash) VALUES ($1::uuid, $2, $3, $4)",
        )
        .bind(&tenant)
        .bind(i16::try_from(*level)?)
        .bind(i64::try_from(*idx)?)
        .bind(hash.to_vec())
        .execute(&pool)
        .await?;
    }
    let signer = Signer::parse(&std::fs::read_to_string(
        cluster.data_dir().join(shared::audit::signer::DEV_KEY_FILE),
    )?)?;
    let head = Head {
        tenant_id: serde_json::from_value(json!(tenant))?,
        tree_size: 8,
        root_hash: hex::encode(frontier.root()),
        issued_at: shared::time::now_ts(),
        key_id: signer.public().kid.clone(),
    }
    .sign(&signer);
    sqlx::query("INSERT INTO log_heads (tenant_id, tree_size, root_hash, issued_at, key_id, signature) VALUES ($1::uuid, 8, $2, $3, $4, $5)")
        .bind(&tenant)
        .bind(&head.head.root_hash)
        .bind(&head.head.issued_at)
        .bind(&head.head.key_id)
        .bind(&head.signature)
        .execute(&pool)
        .await?;
    let (code, verdict) = run(&cluster, api(&cluster, &last)).await?;
    assert_eq!(
        (code, verdict["verdict"].as_str()),
        (0, Some("verified")),
        "{verdict:#}"
    );
    let mut args = api(&cluster, &last);
    args.extend(["--head".into(), save("saved-head.json", &saved_head)?]);
    let (code, verdict) = run(&cluster, args).await?;
    assert_eq!(
        (code, failure(&verdict).0),
        (1, "inconsistent_heads"),
        "{verdict:#}"
    );
    Ok(())
}

#[tokio::test]
async fn receipts_verify_after_the_signing_key_rotates() -> anyhow::Result<()> {
    use shared::audit::signer::Signer;

    let old = Signer::from_seed([1; 32]);
    let new = Signer::from_seed([2; 32]);
    let listed_only = Signer::from_seed([3; 32]);
    let mut cluster = Cluster::start(Options {
        env: vec![(
            "RECEIPT_SIGNING_KEY_ED25519",
            "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE",
        )],
        ..Options::default()
    })
    .await?;
    let key = cluster.api_key.clone();
    let mock = json!({"name": "m", "adapter": "mock", "args": {"steps": 1, "interval_ms": 1}});
    let before = cluster.start_task(mock.clone()).await?;
    ended(&cluster, &before).await?;
    head_of_size(&cluster, &key, 1).await?;

    // The projector restarts with a new key; the old one stays published.
    cluster.kill("projector").await?;
    cluster.set_env(
        "RECEIPT_SIGNING_KEY_ED25519",
        "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI",
    );
    cluster.spawn_role("projector", "projector").await?;
    cluster.kill("api").await?;
    cluster.set_env("RECEIPT_VERIFY_KEYS", &listed_only.public().x());
    let port = cluster
        .spawn_role("api", "command-api,query-api,mcp")
        .await?;
    cluster.base_url = format!("http://127.0.0.1:{port}");
    let after = cluster.start_task(mock).await?;
    ended(&cluster, &after).await?;
    head_of_size(&cluster, &key, 2).await?;

    let response = cluster
        .http
        .get(format!("{}/.well-known/axontask/keys", cluster.base_url))
        .send()
        .await?;
    assert_eq!(response.status(), 200, "no key needed");
    let cache = response.headers()["cache-control"].to_str()?.to_owned();
    assert!(cache.contains("max-age"), "{cache}");
    let jwks: Value = response.json().await?;
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .context("keys")?
        .iter()
        .filter_map(|k| k["kid"].as_str())
        .collect();
    for signer in [&old, &new, &listed_only] {
        assert!(kids.contains(&signer.public().kid.as_str()), "{jwks}");
    }
    assert_eq!(jwks["keys"][0]["kty"], "OKP");
    assert_eq!(jwks["keys"][0]["crv"], "Ed25519");

    for (task, signer) in [(&before, &old), (&after, &new)] {
        let (_, receipt) = cluster
            .get(&format!("/mcp/tasks/{task}/receipt"), Some(&key))
            .await?;
        assert_eq!(receipt["receipt"]["key_id"], signer.public().kid.as_str());
        let (code, verdict) = run(&cluster, api(&cluster, task)).await?;
        assert_eq!(
            (code, verdict["verdict"].as_str()),
            (0, Some("verified")),
            "{verdict:#}"
        );
    }
    // Human output: one verdict line first.
    let (code, out) = cluster
        .run(&[
            "verify",
            "--api",
            &cluster.base_url,
            "--key",
            &key,
            "--task",
            &before,
        ])
        .await?;
    assert_eq!(code, 0);
    assert!(
        out.starts_with(&format!("VERIFIED: task {before} verified")),
        "{out}"
    );
    Ok(())
}

#[tokio::test]
async fn audit_routes_refuse_bad_input_and_other_tenants() -> anyhow::Result<()> {
    let cluster = Cluster::start(Options::default()).await?;
    let key = cluster.api_key.clone();
    let other = cluster.create_key("beta").await?;
    let (status, body) = cluster.get("/api/log/head", Some(&key)).await?;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("log_empty")),
        "{body}"
    );
    let mock = json!({"name": "m", "adapter": "mock", "args": {"steps": 1, "interval_ms": 1}});
    let task = cluster.start_task(mock.clone()).await?;
    ended(&cluster, &task).await?;
    head_of_size(&cluster, &key, 1).await?;
    let second = cluster.start_task(mock).await?;
    ended(&cluster, &second).await?;
    head_of_size(&cluster, &key, 2).await?;

    let ours = Some(key.as_str());
    let theirs = Some(other.as_str());
    let inclusion =
        |task: &str, size: &str| format!("/api/log/proof/inclusion?task_id={task}{size}");
    let consistency = |query: &str| format!("/api/log/proof/consistency?{query}");
    let bad = [
        (
            format!("/mcp/tasks/{task}/receipt"),
            theirs,
            404,
            "task_not_found",
        ),
        (
            format!("/mcp/tasks/{task}/verify"),
            theirs,
            404,
            "task_not_found",
        ),
        (inclusion(&task, ""), theirs, 404, "log_empty"),
        (
            inclusion(&task, "&tree_size=1"),
            theirs,
            404,
            "receipt_not_found",
        ),
        (
            inclusion(&second, "&tree_size=1"),
            ours,
            404,
            "not_yet_in_log",
        ),
        (inclusion(&task, "&tree_size=0"), ours, 400, "bad_tree_size"),
        (inclusion(&task, "&tree_size=9"), ours, 400, "bad_tree_size"),
        (
            inclusion(&task, "&tree_size=18446744073709551615"),
            ours,
            400,
            "bad_tree_size",
        ),
        (inclusion("nope", ""), ours, 400, "invalid_query"),
        (consistency("from=0&to=1"), ours, 400, "bad_tree_size"),
        (consistency("from=2&to=1"), ours, 400, "bad_tree_size"),
        (consistency("from=1&to=3"), ours, 400, "bad_tree_size"),
        (
            consistency("from=1&to=99999999999999999999"),
            ours,
            400,
            "invalid_query",
        ),
        (consistency("from=1"), ours, 400, "invalid_query"),
        ("/api/log/head".to_owned(), None, 401, "missing_api_key"),
    ];
    for (path, key, status, code) in bad {
        let (got, body) = cluster.get(&path, key).await?;
        assert_eq!(
            (got, body["error"]["code"].as_str()),
            (status, Some(code)),
            "{path}: {body}"
        );
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.len() > 20, "{body}");
    }
    let (status, proof) = cluster.get(&inclusion(&task, "&tree_size=1"), ours).await?;
    assert_eq!(
        (status, proof),
        (
            200,
            json!({"leaf_index": 0, "tree_size": 1, "audit_path": []})
        )
    );
    let (status, proof) = cluster.get(&inclusion(&second, ""), ours).await?;
    assert_eq!(status, 200);
    assert_eq!(
        (proof["leaf_index"].as_u64(), proof["tree_size"].as_u64()),
        (Some(1), Some(2))
    );
    let (status, proof) = cluster.get(&consistency("from=1&to=1"), ours).await?;
    assert_eq!(
        (status, proof),
        (200, json!({"from": 1, "to": 1, "proof": []}))
    );

    // verify: a source is required, and a task id must be one.
    let (code, out) = cluster.run(&["verify", "--task", &task]).await?;
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("name a source"), "{out}");
    let (code, out) = cluster
        .run(&["verify", "--task", "nope", "--api", &cluster.base_url])
        .await?;
    assert_eq!(code, 2, "{out}");
    // https is spoken (here to a port that answers plain HTTP): a clear error, no panic.
    let https = cluster.base_url.replace("http://", "https://");
    let (code, out) = cluster
        .run(&["verify", "--task", &task, "--api", &https, "--key", &key])
        .await?;
    assert_eq!(code, 2, "{out}");
    assert!(out.contains(&format!("GET {https}")), "{out}");
    Ok(())
}

/// The Python program of docs/audit.md, as printed there.
fn python_example() -> anyhow::Result<String> {
    let doc = std::fs::read_to_string(e2e::workspace().join("docs/audit.md"))?;
    let start = doc
        .find("```python\n")
        .context("docs/audit.md has no Python block")?
        + 10;
    let end = start
        + doc[start..]
            .find("\n```")
            .context("the Python block does not end")?;
    Ok(doc[start..end].to_owned())
}

/// Runs docs/audit.md's Python checker with `args`: its exit code and output.
async fn python_checker(args: Vec<String>) -> anyhow::Result<(i32, String)> {
    let dir = tempfile::tempdir()?;
    let script = dir.path().join("verify_task.py");
    std::fs::write(&script, python_example()?)?;
    let output = tokio::process::Command::new("python3")
        .arg(&script)
        .args(args)
        .env("PYTHONPATH", e2e::mcp::tool("AXON_MCP_PYTHONPATH", "py")?)
        .output()
        .await
        .context("running python3")?;
    let out = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    Ok((output.status.code().unwrap_or(-1), out))
}

#[tokio::test]
async fn the_python_example_of_docs_audit_verifies_a_real_task() -> anyhow::Result<()> {
    let cluster = Cluster::start(Options::default()).await?;
    let key = cluster.api_key.clone();
    let dir = tempfile::tempdir()?;
    let file = |name: &str| dir.path().join(name).display().to_string();
    let mock = json!({"name": "m", "adapter": "mock", "args": {"steps": 2, "interval_ms": 1, "message": "ünïcödé \"quoted\"\n"}});
    let first = cluster.start_task(mock.clone()).await?;
    ended(&cluster, &first).await?;
    let old_head = head_of_size(&cluster, &key, 1).await?;
    let task = cluster.start_task(mock).await?;
    ended(&cluster, &task).await?;
    let head = head_of_size(&cluster, &key, 2).await?;

    let get = |path: String| {
        let cluster = &cluster;
        let key = key.clone();
        async move {
            let (status, body) = cluster.get(&path, Some(&key)).await?;
            anyhow::ensure!(status == 200, "{path}: {body}");
            Ok::<_, anyhow::Error>(body.to_string())
        }
    };
    let events = cluster
        .http
        .get(format!("{}/mcp/tasks/{task}/events", cluster.base_url))
        .header("X-Api-Key", &key)
        .header("Accept", "application/x-ndjson")
        .send()
        .await?
        .text()
        .await?;
    std::fs::write(file("events.ndjson"), &events)?;
    std::fs::write(
        file("receipt.json"),
        get(format!("/mcp/tasks/{task}/receipt")).await?,
    )?;
    std::fs::write(
        file("keys.json"),
        get("/.well-known/axontask/keys".into()).await?,
    )?;
    std::fs::write(file("head.json"), head.to_string())?;
    std::fs::write(file("old-head.json"), old_head.to_string())?;
    std::fs::write(
        file("inclusion.json"),
        get(format!(
            "/api/log/proof/inclusion?task_id={task}&tree_size=2"
        ))
        .await?,
    )?;
    std::fs::write(
        file("consistency.json"),
        get("/api/log/proof/consistency?from=1&to=2".into()).await?,
    )?;

    let python = |events: &str| {
        let files = [
            "receipt.json",
            "keys.json",
            "head.json",
            "inclusion.json",
            "old-head.json",
            "consistency.json",
        ];
        let mut args = vec![file(events)];
        args.extend(files.map(file));
        python_checker(args)
    };
    let (code, out) = python("events.ndjson").await?;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.starts_with(&format!(
            "verified: task {task}, 5 events, succeeded, leaf 1"
        )),
        "{out}"
    );

    // One changed character in the export: found at its seq.
    let forged = events.replacen("\"percent\":50", "\"percent\":51", 1);
    assert_ne!(forged, events);
    std::fs::write(file("forged.ndjson"), forged)?;
    let (code, out) = python("forged.ndjson").await?;
    assert_eq!(code, 1, "{out}");
    assert!(out.starts_with("FAILED: hash_mismatch at seq 3"), "{out}");
    Ok(())
}
