//! One isolated installation: private nats-server and redis-server, a database of its own,
//! and the `axontask` roles as processes.

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

use crate::eventually;

/// The workspace root.
pub fn workspace() -> PathBuf {
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
    /// Serve the MCP conformance suite's fixtures (`MCP_CONFORMANCE_FIXTURES`).
    pub mcp_fixtures: bool,
    /// More settings for every process (they win over the defaults above).
    pub env: Vec<(&'static str, &'static str)>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            adapters: "mock,shell",
            workers: 1,
            max_attempts: 3,
            release: false,
            mcp_fixtures: false,
            env: Vec::new(),
        }
    }
}

/// One isolated AxonTask installation.
pub struct Cluster {
    dir: tempfile::TempDir,
    nats: Child,
    /// Whether the test provokes NATS permission violations (else one fails the test).
    violations_expected: std::sync::atomic::AtomicBool,
    redis: Child,
    admin_url: String,
    db_name: String,
    env: HashMap<&'static str, String>,
    roles: HashMap<String, Child>,
    ports: HashMap<String, u16>,
    metrics_ports: HashMap<String, u16>,
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
    /// Starts services and the roles `api` (command-api, query-api, mcp), `projector` and
    /// `worker-N`.
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
        // A database per cluster, made by the superuser and owned by the application role.
        let admin_url = std::env::var("AXON_ADMIN_DATABASE_URL")
            .with_context(|| format!("AXON_ADMIN_DATABASE_URL is not set; {hint}"))?;
        let app_url = std::env::var("DATABASE_URL")
            .with_context(|| format!("DATABASE_URL is not set; {hint}"))?;
        let owner = reqwest::Url::parse(&app_url)
            .context("DATABASE_URL is not a URL")?
            .username()
            .to_owned();

        // The repository's nats.conf, as the scripts run it: a user per role, no anonymous.
        // A copy, so a test can add tenant users to it.
        let nats_port = free_port();
        let nats_conf = dir.path().join("nats.conf");
        std::fs::copy(workspace().join("nats.conf"), &nats_conf)?;
        let nats = Command::new(nats_bin)
            .arg("-c")
            .arg(&nats_conf)
            .args(["-a", "127.0.0.1", "-p", &nats_port.to_string(), "-sd"])
            .arg(dir.path().join("nats"))
            .envs(
                NATS_USERS
                    .iter()
                    .map(|user| (password_var(user), nats_password(user))),
            )
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("nats.log"))?)
            .kill_on_drop(true)
            .spawn()
            .context("starting nats-server")?;
        let redis_port = free_port();
        let redis = spawn_redis(redis_port, dir.path())?;

        let db_name = format!("axon_test_{}", uuid::Uuid::now_v7().simple());
        let admin = sqlx::PgPool::connect(&admin_url)
            .await
            .with_context(|| format!("connecting to AXON_ADMIN_DATABASE_URL; {hint}"))?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE DATABASE {db_name} OWNER \"{owner}\""
        )))
        .execute(&admin)
        .await?;
        admin.close().await;
        let database_url = replace_db(&app_url, &db_name);

        let nats_url = nats_user_url(nats_port, "admin");
        let redis_url = format!("redis://127.0.0.1:{redis_port}");
        let env = HashMap::from([
            ("DATABASE_URL", database_url.clone()),
            ("NATS_URL", nats_user_url(nats_port, "axontask")),
            ("REDIS_URL", redis_url.clone()),
            (
                "HMAC_SECRET",
                "e2e-secret-e2e-secret-e2e-secret-e2e".to_owned(),
            ),
            ("JWT_SECRET", crate::JWT_SECRET.to_owned()),
            ("PASSWORD_HASH", "fast".to_owned()),
            // Keys of `keys create` are on plan entry, sign-ups on trial: high enough for
            // every test but the ones about limits, which set their own.
            ("ENTRY_RATE_PER_S", "100000".to_owned()),
            ("ENTRY_TENANT_RATE_PER_S", "100000".to_owned()),
            ("ENTRY_CONCURRENCY", "10000".to_owned()),
            ("ENTRY_TASKS_PER_DAY", "10000000".to_owned()),
            ("ENTRY_SSE_STREAMS", "100000".to_owned()),
            ("ENTRY_MAX_TIMEOUT_S", "604800".to_owned()),
            ("TRIAL_RATE_PER_S", "100000".to_owned()),
            ("TRIAL_TENANT_RATE_PER_S", "100000".to_owned()),
            ("TRIAL_CONCURRENCY", "10000".to_owned()),
            ("AUTH_RATE_PER_MIN", "100000".to_owned()),
            ("ANON_RATE_PER_S", "100000".to_owned()),
            ("API_HOST", "127.0.0.1".to_owned()),
            ("ADAPTERS_ENABLED", options.adapters.to_owned()),
            ("WORKER_ACK_WAIT_S", "2".to_owned()),
            ("SHELL_KILL_GRACE_MS", "1000".to_owned()),
            ("TASK_MAX_ATTEMPTS", options.max_attempts.to_string()),
            ("RUST_LOG", "warn,axontask=info,mcp=info".to_owned()),
            ("AXONTASK_BIN", axontask.display().to_string()),
            ("MCP_CONFORMANCE_FIXTURES", options.mcp_fixtures.to_string()),
            ("AXON_DATA_DIR", dir.path().display().to_string()),
            (
                "MCP_ALLOWED_ORIGINS",
                "http://localhost:*,http://127.0.0.1:*".to_owned(),
            ),
        ]);
        let mut env = env;
        env.extend(
            options
                .env
                .iter()
                .map(|(name, value)| (*name, (*value).to_owned())),
        );
        let mut cluster = Self {
            dir,
            nats,
            violations_expected: std::sync::atomic::AtomicBool::new(false),
            redis,
            admin_url,
            db_name,
            env,
            roles: HashMap::new(),
            ports: HashMap::new(),
            metrics_ports: HashMap::new(),
            base_url: String::new(),
            api_key: String::new(),
            nats_url,
            redis_url,
            database_url,
            http: crate::http_client(),
        };
        wait_port(nats_port).await?;
        wait_port(redis_port).await?;
        cluster.cli(&["migrate"]).await?;
        cluster.api_key = cluster.create_key("alpha").await?;
        let api_port = cluster
            .spawn_role("api", "command-api,query-api,mcp")
            .await?;
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
        self.create_scoped_key(tenant, "*").await
    }

    /// Creates a key for `tenant` with `scopes` (comma-separated) and returns it.
    pub async fn create_scoped_key(&self, tenant: &str, scopes: &str) -> anyhow::Result<String> {
        let out = self
            .cli(&["keys", "create", "--tenant", tenant, "--scopes", scopes])
            .await?;
        Ok(out
            .lines()
            .last()
            .context("keys create printed nothing")?
            .to_owned())
    }

    /// Starts `axontask serve --roles ROLES` as the process `name`, connected to NATS as
    /// the user for those roles; waits until ready.
    pub async fn spawn_role(&mut self, name: &str, roles: &str) -> anyhow::Result<u16> {
        // A port found free may be taken by another test's process before this one binds
        // it: then the process exits at once, and it starts again on other ports.
        for _ in 0..3 {
            let port = free_port();
            let metrics_port = free_port();
            let mut child = self.spawn_serve(name, roles, port, metrics_port)?;
            let ready = format!("http://127.0.0.1:{port}/readyz");
            let up = eventually(|| {
                let exited = child.try_wait().ok().flatten().is_some();
                let http = self.http.clone();
                let ready = ready.clone();
                async move {
                    exited
                        || http
                            .get(&ready)
                            .send()
                            .await
                            .is_ok_and(|r| r.status() == 200)
                }
            })
            .await;
            let exited = child.try_wait().ok().flatten().is_some();
            if up.is_ok() && !exited {
                self.roles.insert(name.to_owned(), child);
                self.ports.insert(name.to_owned(), port);
                self.metrics_ports.insert(name.to_owned(), metrics_port);
                return Ok(port);
            }
            if !(exited && self.log(name).contains("Address already in use")) {
                anyhow::bail!("{name} never became ready; log:\n{}", self.log(name));
            }
        }
        anyhow::bail!("{name} found no free port; log:\n{}", self.log(name))
    }

    /// Starts `axontask serve --roles ROLES` as `name` on the given ports, connected to
    /// NATS as the user for those roles.
    fn spawn_serve(
        &self,
        name: &str,
        roles: &str,
        port: u16,
        metrics_port: u16,
    ) -> anyhow::Result<Child> {
        let log = std::fs::File::create(self.dir.path().join(format!("{name}.log")))?;
        let user = match roles {
            "worker" | "projector" | "command-api" | "query-api" | "webhooks" => roles,
            "command-api,query-api,mcp" => "mcp",
            _ => "axontask",
        };
        let nats_port = reqwest::Url::parse(&self.nats_url)?
            .port()
            .context("a port")?;
        let mut command = Command::new(&self.env["AXONTASK_BIN"]);
        command
            .args(["serve", "--roles", roles])
            .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("NATS_URL", nats_user_url(nats_port, user))
            .env("API_PORT", port.to_string())
            .env("METRICS_ADDR", format!("127.0.0.1:{metrics_port}"));
        if roles == "worker" {
            // As workers should run where strangers' code runs: with no Postgres or Redis
            // credentials at all.
            command.env_remove("DATABASE_URL").env_remove("REDIS_URL");
        }
        Ok(command
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()?)
    }

    /// The `/metrics` URL of role process `name` (its `METRICS_ADDR`).
    pub fn metrics_url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/metrics", self.metrics_ports[name])
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

    /// Runs `axontask` (with the cluster's environment) to its end: its exit code and
    /// standard output.
    pub async fn run(&self, args: &[&str]) -> anyhow::Result<(i32, String)> {
        let output = Command::new(&self.env["AXONTASK_BIN"])
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
            .output()
            .await?;
        Ok((
            output.status.code().unwrap_or(-1),
            String::from_utf8(output.stdout)? + &String::from_utf8_lossy(&output.stderr),
        ))
    }

    /// Sets a variable for role processes started from now on.
    pub fn set_env(&mut self, name: &'static str, value: &str) {
        self.env.insert(name, value.to_owned());
    }

    /// This cluster's data folder (`AXON_DATA_DIR`: the development signing key).
    pub fn data_dir(&self) -> &std::path::Path {
        self.dir.path()
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

    /// The pids of every role process and of this cluster's nats-server and redis-server,
    /// by name.
    pub fn pids(&self) -> Vec<(String, u32)> {
        let roles = self
            .roles
            .iter()
            .filter_map(|(name, child)| Some((name.clone(), child.id()?)));
        let services = [("nats-server", &self.nats), ("redis-server", &self.redis)]
            .into_iter()
            .filter_map(|(name, child)| Some((name.to_owned(), child.id()?)));
        roles.chain(services).collect()
    }

    /// SIGKILLs role process `name` and waits until it is gone.
    pub async fn kill(&mut self, name: &str) -> anyhow::Result<()> {
        let mut child = self.roles.remove(name).context("no such role process")?;
        child.start_kill()?;
        child.wait().await?;
        Ok(())
    }

    /// Adds `entry` to the users list of this cluster's nats.conf (where `axontask nats-user`
    /// says) and makes nats-server reload it.
    pub fn add_nats_user(&self, entry: &str) -> anyhow::Result<()> {
        let path = self.dir.path().join("nats.conf");
        let conf = std::fs::read_to_string(&path)?;
        let marker = "go below this line.\n";
        let at = conf
            .find(marker)
            .context("nats.conf has no tenant users line")?
            + marker.len();
        std::fs::write(&path, format!("{}{entry}\n{}", &conf[..at], &conf[at..]))?;
        let pid = self.nats.id().context("nats-server runs")?;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(pid)?),
            nix::sys::signal::Signal::SIGHUP,
        )?;
        Ok(())
    }

    /// Declares that this test provokes NATS permission violations on purpose. Otherwise a
    /// violation (a role doing what its user may not) fails the test when the cluster
    /// stops.
    pub fn expect_nats_violations(&self) {
        self.violations_expected
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// What nats-server logged (connections refused, permission violations).
    pub fn nats_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("nats.log")).unwrap_or_default()
    }

    /// The log of role process `name`.
    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{name}.log"))).unwrap_or_default()
    }

    /// A NATS client of this cluster's server, as its administrator.
    pub async fn nats(&self) -> anyhow::Result<async_nats::Client> {
        Ok(shared::nats::connect(&self.nats_url, "e2e").await?.0)
    }

    /// A JetStream context of this cluster's server, as its administrator.
    pub async fn js(&self) -> anyhow::Result<async_nats::jetstream::Context> {
        Ok(shared::nats::connect(&self.nats_url, "e2e").await?.1)
    }

    /// A Postgres pool on this cluster's database.
    pub async fn pg(&self) -> anyhow::Result<sqlx::PgPool> {
        Ok(sqlx::PgPool::connect(&self.database_url).await?)
    }

    /// A Redis connection (patient: checks read whole logs while the machine is busy).
    pub async fn redis(&self) -> anyhow::Result<redis::aio::MultiplexedConnection> {
        let config = redis::AsyncConnectionConfig::new()
            .set_response_timeout(Some(crate::PATIENCE))
            .set_connection_timeout(Some(crate::PATIENCE));
        Ok(redis::Client::open(self.redis_url.as_str())?
            .get_multiplexed_async_connection_with_config(&config)
            .await?)
    }
}

async fn wait_port(port: u16) -> anyhow::Result<()> {
    eventually(|| async move {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
    })
    .await
}

/// The NATS users of nats.conf.
const NATS_USERS: [&str; 8] = [
    "admin",
    "axontask",
    "command-api",
    "query-api",
    "mcp",
    "worker",
    "projector",
    "webhooks",
];

/// The variable nats.conf reads `user`'s password from.
fn password_var(user: &str) -> String {
    format!(
        "AXON_NATS_{}_PASSWORD",
        user.to_uppercase().replace('-', "_")
    )
}

/// The test password of NATS user `user`.
fn nats_password(user: &str) -> String {
    format!("e2e-{user}-password")
}

/// A NATS URL for `user` of the server on `port`.
fn nats_user_url(port: u16, user: &str) -> String {
    format!("nats://{user}:{}@127.0.0.1:{port}", nats_password(user))
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
            // As scripts/services.sh runs it: a replay cache that evicts, never refuses.
            "--maxmemory",
            "64mb",
            "--maxmemory-policy",
            "allkeys-lru",
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
        } else if !self
            .violations_expected
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            let log = self.nats_log();
            let violations: Vec<&str> = log.lines().filter(|l| l.contains("Violation")).collect();
            assert!(
                violations.is_empty(),
                "a role did what its NATS user may not (nats.conf):\n{}",
                violations.join("\n")
            );
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
