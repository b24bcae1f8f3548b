//! The end-to-end harness: each [`Cluster`] runs its own nats-server and redis-server on
//! free loopback ports, its own Postgres database (on the server of `DATABASE_URL`), and
//! the real `axontask` binary as separate processes per role, so tests can SIGKILL them.
//!
//! Services come from `scripts/services.sh` (which `scripts/test.sh` runs first).

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use eventsource_stream::{Event, Eventsource};
use futures::{Stream, StreamExt};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::process::{Child, Command};

/// How long a test waits for anything before it fails.
pub const PATIENCE: Duration = Duration::from_secs(30);

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the workspace")
        .to_path_buf()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn binary(env_var: &str, default: PathBuf, hint: &str) -> PathBuf {
    let path = std::env::var_os(env_var)
        .map(PathBuf::from)
        .unwrap_or(default);
    assert!(path.exists(), "{} not found; {hint}", path.display());
    path
}

/// Which roles a cluster runs and how they are configured.
#[derive(Debug, Clone)]
pub struct Options {
    /// `ADAPTERS_ENABLED`.
    pub adapters: &'static str,
    /// Worker processes to start.
    pub workers: usize,
    /// `TASK_MAX_ATTEMPTS`.
    pub max_attempts: u32,
    /// Run `target/release/axontask` (for benchmarks) instead of `target/debug/axontask`.
    pub release: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            adapters: "mock,shell",
            workers: 1,
            max_attempts: 3,
            release: false,
        }
    }
}

/// One isolated AxonTask installation.
pub struct Cluster {
    dir: tempfile::TempDir,
    _nats: Child,
    redis: Child,
    admin_url: String,
    db_name: String,
    env: HashMap<&'static str, String>,
    roles: HashMap<String, Child>,
    ports: HashMap<String, u16>,
    /// The HTTP base URL of the API process (command-api and query-api).
    pub base_url: String,
    /// An API key of tenant `alpha`.
    pub api_key: String,
    /// `NATS_URL`.
    pub nats_url: String,
    /// `REDIS_URL`.
    pub redis_url: String,
    /// `DATABASE_URL` of this cluster's database.
    pub database_url: String,
    /// The HTTP client.
    pub http: reqwest::Client,
}

impl Cluster {
    /// Starts services and the roles `api`, `projector` and `worker-N`.
    pub async fn start(options: Options) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let hint = "run scripts/services.sh, or scripts/test.sh which runs it";
        let nats_bin = binary(
            "AXON_NATS_SERVER",
            workspace().join(".data/nats/bin/nats-server"),
            hint,
        );
        let profile = if options.release { "release" } else { "debug" };
        let axontask = binary(
            "AXONTASK_BIN",
            workspace().join("target").join(profile).join("axontask"),
            "build it first: `cargo build -p axontask` (scripts/test.sh does), with --release for benchmarks",
        );
        let admin_url = std::env::var("DATABASE_URL")
            .with_context(|| format!("DATABASE_URL is not set; {hint}"))?;

        let nats_port = free_port();
        let nats = Command::new(nats_bin)
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &nats_port.to_string(),
                "-sd",
            ])
            .arg(dir.path().join("nats"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting nats-server")?;
        let redis_port = free_port();
        let redis = spawn_redis(redis_port, dir.path())?;

        let db_name = format!("axon_test_{}", uuid::Uuid::now_v7().simple());
        let admin = sqlx::PgPool::connect(&admin_url)
            .await
            .with_context(|| format!("connecting to DATABASE_URL; {hint}"))?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db_name}")))
            .execute(&admin)
            .await?;
        admin.close().await;
        let database_url = replace_db(&admin_url, &db_name);

        let nats_url = format!("nats://127.0.0.1:{nats_port}");
        let redis_url = format!("redis://127.0.0.1:{redis_port}");
        let env = HashMap::from([
            ("DATABASE_URL", database_url.clone()),
            ("NATS_URL", nats_url.clone()),
            ("REDIS_URL", redis_url.clone()),
            (
                "HMAC_SECRET",
                "e2e-secret-e2e-secret-e2e-secret-e2e".to_owned(),
            ),
            ("API_HOST", "127.0.0.1".to_owned()),
            ("ADAPTERS_ENABLED", options.adapters.to_owned()),
            ("WORKER_ACK_WAIT_S", "2".to_owned()),
            ("SHELL_KILL_GRACE_MS", "1000".to_owned()),
            ("TASK_MAX_ATTEMPTS", options.max_attempts.to_string()),
            ("RUST_LOG", "warn,axontask=info".to_owned()),
            ("AXONTASK_BIN", axontask.display().to_string()),
        ]);
        let mut cluster = Self {
            dir,
            _nats: nats,
            redis,
            admin_url,
            db_name,
            env,
            roles: HashMap::new(),
            ports: HashMap::new(),
            base_url: String::new(),
            api_key: String::new(),
            nats_url,
            redis_url,
            database_url,
            http: reqwest::Client::new(),
        };
        wait_port(nats_port).await?;
        wait_port(redis_port).await?;
        cluster.cli(&["migrate"]).await?;
        cluster.api_key = cluster.create_key("alpha").await?;
        let api_port = cluster.spawn_role("api", "command-api,query-api").await?;
        cluster.base_url = format!("http://127.0.0.1:{api_port}");
        cluster.spawn_role("projector", "projector").await?;
        for n in 1..=options.workers {
            cluster.spawn_role(&format!("worker-{n}"), "worker").await?;
        }
        Ok(cluster)
    }

    /// Runs an `axontask` subcommand to completion and returns its standard output.
    pub async fn cli(&self, args: &[&str]) -> anyhow::Result<String> {
        let output = Command::new(&self.env["AXONTASK_BIN"])
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
            .output()
            .await?;
        if !output.status.success() {
            bail!(
                "axontask {args:?} failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(String::from_utf8(output.stdout)?)
    }

    /// Creates a key for `tenant` and returns it (the last line of `keys create`).
    pub async fn create_key(&self, tenant: &str) -> anyhow::Result<String> {
        let out = self.cli(&["keys", "create", "--tenant", tenant]).await?;
        Ok(out
            .lines()
            .last()
            .context("keys create printed nothing")?
            .to_owned())
    }

    /// Starts `axontask serve --roles ROLES` as the process `name`; waits until ready.
    pub async fn spawn_role(&mut self, name: &str, roles: &str) -> anyhow::Result<u16> {
        let port = free_port();
        let log = std::fs::File::create(self.dir.path().join(format!("{name}.log")))?;
        let child = Command::new(&self.env["AXONTASK_BIN"])
            .args(["serve", "--roles", roles])
            .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("API_PORT", port.to_string())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()?;
        self.roles.insert(name.to_owned(), child);
        self.ports.insert(name.to_owned(), port);
        let ready = format!("http://127.0.0.1:{port}/readyz");
        eventually(|| async {
            self.http
                .get(&ready)
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        })
        .await
        .with_context(|| format!("{name} never became ready; log:\n{}", self.log(name)))?;
        Ok(port)
    }

    /// The HTTP base URL of role process `name`.
    pub fn url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}", self.ports[name])
    }

    /// Stops this cluster's Redis server.
    pub async fn kill_redis(&mut self) -> anyhow::Result<()> {
        self.redis.start_kill()?;
        self.redis.wait().await?;
        Ok(())
    }

    /// Starts an empty Redis server again on the same port.
    pub async fn restart_redis(&mut self) -> anyhow::Result<()> {
        let port = self
            .redis_url
            .rsplit(':')
            .next()
            .context("a port")?
            .parse()?;
        self.redis = spawn_redis(port, self.dir.path())?;
        wait_port(port).await
    }

    /// Runs `axontask` with extra environment and returns its exit status and stderr.
    pub async fn run_with_env(
        &self,
        args: &[&str],
        extra: &[(&str, &str)],
    ) -> anyhow::Result<(bool, String)> {
        let output = Command::new(&self.env["AXONTASK_BIN"])
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
            .envs(extra.iter().copied())
            .output()
            .await?;
        Ok((
            output.status.success(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        ))
    }

    /// Takes role process `name` out of the cluster (to signal and await it).
    pub fn take(&mut self, name: &str) -> Option<Child> {
        self.roles.remove(name)
    }

    /// The pid of role process `name`.
    pub fn pid(&self, name: &str) -> Option<u32> {
        self.roles.get(name).and_then(Child::id)
    }

    /// SIGKILLs role process `name` and waits until it is gone.
    pub async fn kill(&mut self, name: &str) -> anyhow::Result<()> {
        let mut child = self.roles.remove(name).context("no such role process")?;
        child.start_kill()?;
        child.wait().await?;
        Ok(())
    }

    /// The log of role process `name`.
    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{name}.log"))).unwrap_or_default()
    }

    /// A Postgres pool on this cluster's database.
    pub async fn pg(&self) -> anyhow::Result<sqlx::PgPool> {
        Ok(sqlx::PgPool::connect(&self.database_url).await?)
    }

    /// A Redis connection.
    pub async fn redis(&self) -> anyhow::Result<redis::aio::MultiplexedConnection> {
        Ok(redis::Client::open(self.redis_url.as_str())?
            .get_multiplexed_async_connection()
            .await?)
    }

    /// POST `path` with a JSON body and `key`; returns status and body.
    pub async fn post(
        &self,
        path: &str,
        key: Option<&str>,
        body: &Value,
    ) -> anyhow::Result<(u16, Value)> {
        let mut request = self
            .http
            .post(format!("{}{path}", self.base_url))
            .json(body);
        if let Some(key) = key {
            request = request.header("X-Api-Key", key);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        Ok((status, response.json().await.unwrap_or(Value::Null)))
    }

    /// GET `path` with `key`; returns status and JSON body.
    pub async fn get(&self, path: &str, key: Option<&str>) -> anyhow::Result<(u16, Value)> {
        let mut request = self.http.get(format!("{}{path}", self.base_url));
        if let Some(key) = key {
            request = request.header("X-Api-Key", key);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        Ok((status, response.json().await.unwrap_or(Value::Null)))
    }

    /// Cancels a task with this cluster's key; returns status and body.
    pub async fn cancel(&self, task: &str) -> anyhow::Result<(u16, Value)> {
        self.post(
            &format!("/mcp/tasks/{task}/cancel"),
            Some(&self.api_key),
            &json!({}),
        )
        .await
    }

    /// Starts a task with this cluster's key; returns its id.
    pub async fn start_task(&self, body: Value) -> anyhow::Result<String> {
        let (status, answer) = self
            .post("/mcp/start_task", Some(&self.api_key), &body)
            .await?;
        if status != 200 {
            bail!("start_task answered {status}: {answer}");
        }
        Ok(answer["task_id"].as_str().context("no task_id")?.to_owned())
    }

    /// Opens the SSE stream of a task; `last_event_id` sets the header.
    pub async fn sse(
        &self,
        task: &str,
        query: &str,
        last_event_id: Option<u64>,
    ) -> anyhow::Result<impl Stream<Item = Value> + Unpin + use<>> {
        let mut request = self
            .http
            .get(format!("{}/mcp/tasks/{task}/stream{query}", self.base_url))
            .header("X-Api-Key", &self.api_key);
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id.to_string());
        }
        open_sse(request).await
    }

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
        let client = async_nats::connect(&self.nats_url).await?;
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

    /// Streams a task from the start to its terminal event.
    pub async fn stream_to_end(&self, task: &str) -> anyhow::Result<Vec<Value>> {
        collect_to_end(self.sse(task, "", None).await?).await
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

/// Sends an SSE request and returns its events' `data` as JSON, checking `id` and `event`.
pub async fn open_sse(
    request: reqwest::RequestBuilder,
) -> anyhow::Result<impl Stream<Item = Value> + Unpin + use<>> {
    let response = request.send().await?;
    if response.status() != 200 {
        bail!(
            "stream answered {}: {}",
            response.status(),
            response.text().await?
        );
    }
    Ok(Box::pin(response.bytes_stream().eventsource().filter_map(
        |event: Result<Event, _>| async move {
            let event = event.ok()?;
            let data: Value = serde_json::from_str(&event.data).ok()?;
            assert_eq!(event.id, data["seq"].to_string(), "SSE id is the seq");
            assert_eq!(event.event, data["kind"].as_str()?, "SSE event is the kind");
            Some(data)
        },
    )))
}

/// Reads events until the terminal one (and checks the stream then ends).
pub async fn collect_to_end(
    mut events: impl Stream<Item = Value> + Unpin,
) -> anyhow::Result<Vec<Value>> {
    let mut seen = Vec::new();
    loop {
        let event = tokio::time::timeout(PATIENCE, events.next())
            .await
            .context("no event in time")?
            .with_context(|| format!("stream ended before a terminal event after {seen:?}"))?;
        let terminal = is_terminal(&event);
        seen.push(event);
        if terminal {
            break;
        }
    }
    let after = tokio::time::timeout(PATIENCE, events.next())
        .await
        .context("stream stayed open")?;
    assert!(
        after.is_none(),
        "an event followed the terminal one: {after:?}"
    );
    Ok(seen)
}

/// Whether an envelope's kind ends a task.
pub fn is_terminal(event: &Value) -> bool {
    matches!(
        event["kind"].as_str(),
        Some("succeeded" | "failed" | "canceled" | "timeout")
    )
}

/// The kinds of a list of envelopes.
pub fn kinds(events: &[Value]) -> Vec<&str> {
    events.iter().filter_map(|e| e["kind"].as_str()).collect()
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

/// Polls `check` every 20 ms until it holds or [`PATIENCE`] runs out.
pub async fn eventually<F, Fut>(mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bail!("condition not met within {PATIENCE:?}")
}

async fn wait_port(port: u16) -> anyhow::Result<()> {
    eventually(|| async move {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
    })
    .await
}

fn spawn_redis(port: u16, dir: &Path) -> anyhow::Result<Child> {
    Command::new("redis-server")
        .args([
            "--bind",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--save",
            "",
        ])
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting redis-server; run scripts/services.sh, which installs it")
}

fn replace_db(url: &str, db: &str) -> String {
    let (base, _) = url
        .rsplit_once('/')
        .expect("DATABASE_URL ends with /database");
    format!("{base}/{db}")
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for name in self.roles.keys() {
                eprintln!("----- log of {name} -----\n{}", self.log(name));
            }
        }
        for child in self.roles.values_mut() {
            let _ = child.start_kill();
        }
        let (url, db) = (self.admin_url.clone(), self.db_name.clone());
        // Drop the database from a thread of its own: Drop cannot await.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let admin = sqlx::PgPool::connect(&url).await?;
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {db} WITH (FORCE)"
                )))
                .execute(&admin)
                .await?;
                anyhow::Ok(())
            })
        })
        .join();
    }
}
