//! Configuration from the environment (§3.11). A missing or malformed value stops start-up
//! with an error naming the variable.

use std::net::IpAddr;
use std::time::Duration;

use crate::audit::signer::{PublicKey, Signer};
use crate::plans::{LimitsConfig, PlanLimits};

/// Adapters this build can run; `ADAPTERS_ENABLED` picks among them.
pub const KNOWN_ADAPTERS: [&str; 4] = ["mock", "shell", "docker", "fly"];

/// Secret values shown in `.env.example` and `docker-compose.yml`: refused, since anyone
/// can read them there.
const EXAMPLE_SECRETS: [&str; 1] = ["change-me-change-me-change-me-change-me"];

/// A variable that is missing or malformed.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{var}: {reason}")]
pub struct Error {
    /// The environment variable.
    pub var: &'static str,
    /// What is wrong and what is expected.
    pub reason: String,
}

/// Everything a process needs, read once at start.
#[derive(Debug, Clone)]
pub struct Config {
    /// `DATABASE_URL`: Postgres (every role but `worker` needs it).
    pub database_url: Option<String>,
    /// `REDIS_URL`: Redis (every role but worker and webhooks needs it).
    pub redis_url: Option<String>,
    /// `NATS_URL`: NATS with JetStream.
    pub nats_url: String,
    /// `API_HOST` (default 127.0.0.1): the address HTTP binds.
    pub api_host: IpAddr,
    /// `API_PORT` (default 8080): the HTTP port of every process.
    pub api_port: u16,
    /// `METRICS_ADDR` (default `127.0.0.1:9464`; `off` for none): where `/metrics` is
    /// served, apart from the API. Processes on one machine need one each.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// `HMAC_SECRET` (at least 32 bytes): signs resume tokens.
    pub hmac_secret: String,
    /// `RESUME_TOKEN_TTL_S` (default 86400): how long a resume token opens its stream.
    pub resume_token_ttl: Duration,
    /// `SSE_MAX_STREAMS_PER_TENANT` (default 10000): SSE streams one tenant may have open
    /// on one query-api process; more get 429.
    pub sse_max_streams_per_tenant: usize,
    /// `ADAPTERS_ENABLED` (default `mock`): comma-separated adapters workers may run.
    pub adapters_enabled: Vec<String>,
    /// `TASK_DEFAULT_TIMEOUT_S` (default 3600): the timeout of a task started without one.
    pub default_timeout_s: u32,
    /// `TASK_MAX_TIMEOUT_S` (default 604800, a week): the longest timeout a task may ask.
    pub max_timeout_s: u32,
    /// How long the streams keep messages.
    pub streams: StreamLimits,
    /// The HTTP server's limits.
    pub http: HttpLimits,
    /// Worker tuning.
    pub worker: WorkerConfig,
    /// The MCP endpoint.
    pub mcp: McpConfig,
    /// Receipt and tree-head keys.
    pub receipts: ReceiptConfig,
    /// Sign-in: users, sessions and their tokens.
    pub auth: AuthConfig,
    /// Rate limits and quotas by plan.
    pub limits: LimitsConfig,
    /// Webhook deliveries.
    pub webhooks: WebhookConfig,
}

/// Webhook deliveries (the `webhooks` role, and `POST /api/webhooks`).
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookConfig {
    /// `WEBHOOK_ALLOW_PRIVATE` (default false): allow `http` and private, loopback or
    /// link-local targets (development and tests only).
    pub allow_private: bool,
    /// `WEBHOOK_MAX_ATTEMPTS` (default 16: retries for about five hours): attempts at a
    /// delivery before it fails.
    pub max_attempts: u32,
    /// `WEBHOOK_RETRY_BASE_MS` (default 1000): the wait after the first failed attempt;
    /// each next wait doubles (at most an hour), less up to half at random.
    pub retry_base: Duration,
    /// `WEBHOOK_TIMEOUT_S` (default 10): how long one attempt may take.
    pub timeout: Duration,
}

/// Sign-in (`/auth/*`, `Authorization: Bearer`).
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// `JWT_SECRET` (at least 32 bytes): signs access and refresh tokens. The roles that
    /// serve the API need it.
    pub jwt_secret: Option<String>,
    /// `JWT_EXPIRY_SECONDS` (default 900): how long an access token lives.
    pub access_ttl: Duration,
    /// `JWT_REFRESH_EXPIRY_SECONDS` (default 2592000, 30 days): how long a session and
    /// its refresh tokens live.
    pub refresh_ttl: Duration,
    /// `PASSWORD_HASH` (default `argon2id`: 64 MiB, 3 passes, 4 lanes; `fast`: 1 MiB, 1
    /// pass, for tests only).
    pub fast_password_hash: bool,
}

/// The keys of receipts and signed tree heads (§3.3).
#[derive(Debug, Clone)]
pub struct ReceiptConfig {
    /// `RECEIPT_SIGNING_KEY_ED25519`: a PKCS#8 PEM private key or a base64url 32-byte
    /// seed; the projector signs with it. Unset: a development key under `data_dir`.
    pub signing_key: Option<Signer>,
    /// `RECEIPT_VERIFY_KEYS`: comma-separated base64url public keys (a JWK's `x`) of
    /// retired signing keys, published beside the keys that signed here.
    pub verify_keys: Vec<PublicKey>,
    /// `AXON_DATA_DIR` (default `.data`): where the development signing key is kept.
    pub data_dir: std::path::PathBuf,
}

impl ReceiptConfig {
    /// The signing key, or the development key (made on first use) with a warning.
    pub fn signer(&self) -> Result<Signer, Error> {
        if let Some(signer) = &self.signing_key {
            return Ok(signer.clone());
        }
        let signer = Signer::dev_key(&self.data_dir).map_err(|e| Error {
            var: "AXON_DATA_DIR",
            reason: format!("cannot keep the development receipt key: {e}"),
        })?;
        tracing::warn!(
            key_id = %signer.public().kid,
            dir = %self.data_dir.display(),
            "RECEIPT_SIGNING_KEY_ED25519 is not set: receipts are signed with a development key kept in the data folder; set your own for production"
        );
        Ok(signer)
    }
}

/// The MCP endpoint's protections.
#[derive(Debug, Clone)]
pub struct McpConfig {
    /// `MCP_ALLOWED_ORIGINS` (default none): comma-separated browser origins
    /// (`https://app.example.com`, `http://localhost:*`) allowed to call `/mcp`; a request
    /// with any other `Origin` is refused, one without `Origin` is allowed.
    pub allowed_origins: Vec<String>,
    /// `MCP_ALLOWED_HOSTS` (default `localhost,127.0.0.1,::1`): `Host` values `/mcp`
    /// accepts (DNS-rebinding protection); list your public host names here.
    pub allowed_hosts: Vec<String>,
    /// `MCP_CONFORMANCE_FIXTURES` (default false): serve the conformance suite's fixture
    /// tools and resources too. For tests only.
    pub fixtures: bool,
}

/// What one process's HTTP server allows.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpLimits {
    /// `HTTP_HEADER_READ_TIMEOUT_S` (default 10): time for a request's headers to arrive
    /// before the connection is closed.
    pub header_read_timeout: Duration,
    /// `HTTP_MAX_CONNECTIONS` (default 20000): connections open at once; more wait in the
    /// listen queue.
    pub max_connections: usize,
    /// `CORS_ALLOWED_ORIGINS` (default none): comma-separated browser origins
    /// (`https://app.example.com`) allowed to call the API cross-origin.
    pub cors_origins: Vec<axum::http::HeaderValue>,
}

/// How long JetStream keeps messages (applied when a role starts).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StreamLimits {
    /// `AXON_MAX_AGE_S` (default 2592000, 30 days): commands and worker events. Keep it
    /// well above any projector outage: what ages out before it was projected is lost.
    pub axon_max_age: Duration,
    /// `AXON_LOG_MAX_AGE_S` (default 604800, 7 days): chained events for other services.
    pub log_max_age: Duration,
    /// `AXON_HEADS_MAX_AGE_S` (default 31536000, a year): signed tree heads, for auditors
    /// (Postgres keeps every head too).
    pub heads_max_age: Duration,
}

impl Default for StreamLimits {
    fn default() -> Self {
        Self {
            axon_max_age: Duration::from_secs(30 * 24 * 3600),
            log_max_age: Duration::from_secs(7 * 24 * 3600),
            heads_max_age: Duration::from_secs(365 * 24 * 3600),
        }
    }
}

/// How workers run tasks.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// `WORKER_CONCURRENCY` (default 32): tasks one worker process runs at once.
    pub concurrency: usize,
    /// `WORKER_ACK_WAIT_S` (default 30): how long a silent worker keeps a task before
    /// another worker takes it over.
    pub ack_wait: Duration,
    /// `TASK_MAX_ATTEMPTS` (default 3): runs of a task before it fails for lost workers.
    pub max_attempts: u32,
    /// `SHELL_KILL_GRACE_MS` (default 5000): SIGTERM to SIGKILL on cancel or timeout.
    pub kill_grace: Duration,
    /// `TASK_MAX_EVENTS` (default 1000000): events one run of a task may report; past it
    /// the task fails.
    pub max_events: u64,
    /// `TASK_MAX_OUTPUT_BYTES` (default 268435456, 256 MiB): bytes of output lines one run
    /// of a task may report; past it the task fails.
    pub max_output_bytes: u64,
    /// The shell adapter's sandbox.
    pub shell: ShellConfig,
    /// The docker adapter's engine and container limits.
    pub docker: DockerConfig,
    /// The fly adapter's Machines API.
    pub fly: FlyConfig,
}

/// Where the fly adapter makes Machines.
#[derive(Clone, PartialEq)]
pub struct FlyConfig {
    /// `FLY_API_TOKEN`: the Machines API token (required when `fly` is enabled; never
    /// logged).
    pub api_token: Option<String>,
    /// `FLY_API_HOSTNAME` (default `https://api.machines.dev`): the Machines API; `https`,
    /// or `http` on loopback only (the token must not cross a network in the clear).
    pub api_hostname: String,
    /// `FLY_APPS` (required when `fly` is enabled): the Fly apps tasks may make Machines
    /// in. A Machine gets its app's secrets and private network, so a tenant may never
    /// pick any app the token reaches.
    pub apps: Vec<String>,
}

impl std::fmt::Debug for FlyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlyConfig")
            .field("api_token", &self.api_token.as_ref().map(|_| "***"))
            .field("api_hostname", &self.api_hostname)
            .field("apps", &self.apps)
            .finish()
    }
}

/// Where and how docker tasks run.
#[derive(Debug, Clone, PartialEq)]
pub struct DockerConfig {
    /// `DOCKER_HOST` (default the local socket, `unix:///var/run/docker.sock`): the engine.
    pub host: Option<String>,
    /// `DOCKER_MEMORY_MB` (default 512): memory of one container (no swap beyond it).
    pub memory_mb: u64,
    /// `DOCKER_CPUS` (default 1): CPUs one container may use, fractions allowed (`0.5`).
    pub cpus: f64,
    /// `DOCKER_PIDS` (default 256): processes (and threads) one container may have.
    pub pids: u32,
    /// `DOCKER_TMPFS_MB` (default 256): size of the container's writable work directory
    /// and of its `/tmp` (its root file system is read-only).
    pub tmpfs_mb: u64,
    /// `DOCKER_NETWORK` (default `none`): the network containers join; `none` for none.
    pub network: String,
}

/// Where and how shell tasks run.
#[derive(Debug, Clone, PartialEq)]
pub struct ShellConfig {
    /// `SHELL_USER` (default `axon-task`): the unprivileged account whose group shell
    /// tasks run in (the install script creates it).
    pub user: String,
    /// `SHELL_UIDS` (default `2000000-2000999`): user ids for runs, one per running task,
    /// so no task can read another's files or processes. No account may use them.
    pub uids: (u32, u32),
    /// `SHELL_WORK_DIR` (default `/var/lib/axontask/tasks`): the private working
    /// directories of runs are made (and removed) in it.
    pub work_dir: String,
    /// `SHELL_MAX_PROCS` (default 256): processes (and threads) one task may have at once.
    pub max_procs: u32,
    /// `SHELL_MAX_MEMORY_MB` (default 4096): address space of each process of a task.
    pub max_memory_mb: u64,
    /// `SHELL_MAX_CPU_S` (default 3600): CPU seconds each process of a task may use.
    pub max_cpu_s: u64,
    /// `SHELL_MAX_FILE_MB` (default 1024): the largest file a task may write.
    pub max_file_mb: u64,
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, Error> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads only `DATABASE_URL` (for commands that need nothing else).
    pub fn database_url_from_env() -> Result<String, Error> {
        let lookup = |name: &str| std::env::var(name).ok();
        Env(&lookup).url("DATABASE_URL", &["postgres", "postgresql"])
    }

    /// Reads configuration through `lookup` (the environment, or a map in tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, Error> {
        let env = Env(&lookup);
        // Stripe billing is not part of this build; nothing depends on it.
        if env.parsed("BILLING_ENABLED", false)? {
            return Err(Error {
                var: "BILLING_ENABLED",
                reason: "billing is not available in this build; leave it false (plans are set with `axontask keys create --plan`)".into(),
            });
        }
        let config = Self::read(&env)?;
        if config.auth.jwt_secret.as_deref() == Some(config.hmac_secret.as_str()) {
            return Err(Error {
                var: "JWT_SECRET",
                reason: "is the same as HMAC_SECRET; give each its own (openssl rand -hex 32)"
                    .into(),
            });
        }
        if config.default_timeout_s > config.max_timeout_s {
            return Err(Error {
                var: "TASK_DEFAULT_TIMEOUT_S",
                reason: format!(
                    "{} is more than TASK_MAX_TIMEOUT_S ({})",
                    config.default_timeout_s, config.max_timeout_s
                ),
            });
        }
        Ok(config)
    }

    fn read<F: Fn(&str) -> Option<String>>(env: &Env<'_, F>) -> Result<Self, Error> {
        Ok(Self {
            database_url: env.optional_url("DATABASE_URL", &["postgres", "postgresql"])?,
            redis_url: env.optional_url("REDIS_URL", &["redis", "rediss"])?,
            nats_url: env.url("NATS_URL", &["nats", "tls"])?,
            api_host: env.parsed("API_HOST", "127.0.0.1".parse().expect("a literal IP"))?,
            api_port: env.parsed("API_PORT", 8080)?,
            metrics_addr: match env.get("METRICS_ADDR").as_deref() {
                Some("off") => None,
                _ => Some(env.parsed("METRICS_ADDR", ([127, 0, 0, 1], 9464).into())?),
            },
            hmac_secret: env.secret("HMAC_SECRET")?,
            resume_token_ttl: Duration::from_secs(env.positive("RESUME_TOKEN_TTL_S", 86_400)?),
            sse_max_streams_per_tenant: env.positive("SSE_MAX_STREAMS_PER_TENANT", 10_000)?,
            adapters_enabled: env.adapters()?,
            default_timeout_s: env.positive("TASK_DEFAULT_TIMEOUT_S", 3600)?,
            max_timeout_s: env.positive("TASK_MAX_TIMEOUT_S", 7 * 24 * 3600)?,
            http: HttpLimits {
                header_read_timeout: Duration::from_secs(
                    env.positive("HTTP_HEADER_READ_TIMEOUT_S", 10)?,
                ),
                max_connections: env.positive("HTTP_MAX_CONNECTIONS", 20_000)?,
                cors_origins: env
                    .list("CORS_ALLOWED_ORIGINS", "")
                    .iter()
                    .map(|origin| {
                        let valid = (origin.starts_with("https://") || origin.starts_with("http://"))
                            && !origin.ends_with('/');
                        axum::http::HeaderValue::from_str(origin)
                            .ok()
                            .filter(|_| valid)
                            .ok_or_else(|| Error {
                                var: "CORS_ALLOWED_ORIGINS",
                                reason: format!(
                                    "'{origin}' is not an origin like https://app.example.com (scheme and host, no path)"
                                ),
                            })
                    })
                    .collect::<Result<_, _>>()?,
            },
            streams: StreamLimits {
                axon_max_age: Duration::from_secs(env.positive(
                    "AXON_MAX_AGE_S",
                    StreamLimits::default().axon_max_age.as_secs(),
                )?),
                log_max_age: Duration::from_secs(env.positive(
                    "AXON_LOG_MAX_AGE_S",
                    StreamLimits::default().log_max_age.as_secs(),
                )?),
                heads_max_age: Duration::from_secs(env.positive(
                    "AXON_HEADS_MAX_AGE_S",
                    StreamLimits::default().heads_max_age.as_secs(),
                )?),
            },
            worker: WorkerConfig {
                concurrency: env.positive("WORKER_CONCURRENCY", 32)?,
                ack_wait: Duration::from_secs(env.positive("WORKER_ACK_WAIT_S", 30)?),
                max_attempts: env.positive("TASK_MAX_ATTEMPTS", 3)?,
                kill_grace: Duration::from_millis(env.positive("SHELL_KILL_GRACE_MS", 5000)?),
                max_events: env.positive("TASK_MAX_EVENTS", 1_000_000)?,
                max_output_bytes: env.positive("TASK_MAX_OUTPUT_BYTES", 256 << 20)?,
                shell: ShellConfig {
                    user: env.get("SHELL_USER").unwrap_or_else(|| "axon-task".into()),
                    uids: env.range("SHELL_UIDS", (2_000_000, 2_000_999))?,
                    work_dir: env
                        .get("SHELL_WORK_DIR")
                        .unwrap_or_else(|| "/var/lib/axontask/tasks".into()),
                    max_procs: env.positive("SHELL_MAX_PROCS", 256)?,
                    max_memory_mb: env.positive("SHELL_MAX_MEMORY_MB", 4096)?,
                    max_cpu_s: env.positive("SHELL_MAX_CPU_S", 3600)?,
                    max_file_mb: env.positive("SHELL_MAX_FILE_MB", 1024)?,
                },
                docker: DockerConfig {
                    host: env.get("DOCKER_HOST"),
                    memory_mb: env.positive("DOCKER_MEMORY_MB", 512)?,
                    cpus: env.positive("DOCKER_CPUS", 1.0)?,
                    pids: env.positive("DOCKER_PIDS", 256)?,
                    tmpfs_mb: env.positive("DOCKER_TMPFS_MB", 256)?,
                    network: env
                        .get("DOCKER_NETWORK")
                        .unwrap_or_else(|| "none".into()),
                },
                fly: env.fly()?,
            },
            mcp: McpConfig {
                allowed_origins: env.list("MCP_ALLOWED_ORIGINS", ""),
                allowed_hosts: env
                    .non_empty_list("MCP_ALLOWED_HOSTS", "localhost,127.0.0.1,::1")?,
                fixtures: env.parsed("MCP_CONFORMANCE_FIXTURES", false)?,
            },
            auth: AuthConfig {
                jwt_secret: match env.get("JWT_SECRET") {
                    Some(_) => Some(env.secret("JWT_SECRET")?),
                    None => None,
                },
                access_ttl: Duration::from_secs(env.positive("JWT_EXPIRY_SECONDS", 900)?),
                refresh_ttl: Duration::from_secs(
                    env.positive("JWT_REFRESH_EXPIRY_SECONDS", 30 * 24 * 3600)?,
                ),
                fast_password_hash: match env.get("PASSWORD_HASH").as_deref() {
                    None | Some("argon2id") => false,
                    Some("fast") => true,
                    Some(other) => {
                        return Err(Error {
                            var: "PASSWORD_HASH",
                            reason: format!("'{other}' is neither argon2id nor fast (tests only)"),
                        });
                    }
                },
            },
            limits: LimitsConfig {
                enabled: env.parsed("LIMITS_ENABLED", true)?,
                fail_open: match env.get("RATE_LIMIT_FAIL").as_deref() {
                    None | Some("open") => true,
                    Some("closed") => false,
                    Some(other) => {
                        return Err(Error {
                            var: "RATE_LIMIT_FAIL",
                            reason: format!("'{other}' is neither open nor closed"),
                        });
                    }
                },
                auth_per_min: env.positive("AUTH_RATE_PER_MIN", 10)?,
                anon_per_s: env.positive("ANON_RATE_PER_S", 20)?,
                plans: [
                    plan!(env, "TRIAL", [5, 10, 2, 100, 10, 600]),
                    plan!(env, "ENTRY", [20, 50, 10, 5_000, 100, 3_600]),
                    plan!(env, "PRO", [100, 250, 50, 100_000, 1_000, 86_400]),
                    plan!(env, "ENTERPRISE", [1_000, 2_500, 500, 10_000_000, 10_000, 604_800]),
                ],
            },
            webhooks: WebhookConfig {
                allow_private: env.parsed("WEBHOOK_ALLOW_PRIVATE", false)?,
                max_attempts: env.positive("WEBHOOK_MAX_ATTEMPTS", 16)?,
                retry_base: Duration::from_millis(env.positive("WEBHOOK_RETRY_BASE_MS", 1000)?),
                timeout: Duration::from_secs(env.positive("WEBHOOK_TIMEOUT_S", 10)?),
            },
            receipts: ReceiptConfig {
                signing_key: env
                    .get("RECEIPT_SIGNING_KEY_ED25519")
                    .map(|text| Signer::parse(&text))
                    .transpose()
                    .map_err(|e| Error {
                        var: "RECEIPT_SIGNING_KEY_ED25519",
                        reason: e.0,
                    })?,
                verify_keys: env
                    .list("RECEIPT_VERIFY_KEYS", "")
                    .iter()
                    .map(|x| PublicKey::parse(x))
                    .collect::<Result<_, _>>()
                    .map_err(|e| Error {
                        var: "RECEIPT_VERIFY_KEYS",
                        reason: e.0,
                    })?,
                data_dir: env
                    .get("AXON_DATA_DIR")
                    .unwrap_or_else(|| ".data".into())
                    .into(),
            },
        })
    }
}

/// A plan's limits from `{PLAN}_RATE_PER_S`, `{PLAN}_TENANT_RATE_PER_S`,
/// `{PLAN}_CONCURRENCY`, `{PLAN}_TASKS_PER_DAY`, `{PLAN}_SSE_STREAMS` and
/// `{PLAN}_MAX_TIMEOUT_S`, with these defaults in that order.
macro_rules! plan {
    ($env:expr, $plan:literal, [$rate:expr, $tenant:expr, $conc:expr, $day:expr, $sse:expr, $timeout:expr]) => {
        PlanLimits {
            key_rate: $env.positive(concat!($plan, "_RATE_PER_S"), $rate)?,
            tenant_rate: $env.positive(concat!($plan, "_TENANT_RATE_PER_S"), $tenant)?,
            concurrency: $env.positive(concat!($plan, "_CONCURRENCY"), $conc)?,
            tasks_per_day: $env.positive(concat!($plan, "_TASKS_PER_DAY"), $day)?,
            sse_streams: $env.positive(concat!($plan, "_SSE_STREAMS"), $sse)?,
            max_timeout_s: $env.positive(concat!($plan, "_MAX_TIMEOUT_S"), $timeout)?,
        }
    };
}
use plan;

struct Env<'a, F: Fn(&str) -> Option<String>>(&'a F);

impl<F: Fn(&str) -> Option<String>> Env<'_, F> {
    fn get(&self, var: &'static str) -> Option<String> {
        (self.0)(var)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    fn required(&self, var: &'static str) -> Result<String, Error> {
        self.get(var).ok_or_else(|| Error {
            var,
            reason: "is not set; see .env.example".into(),
        })
    }

    fn url(&self, var: &'static str, schemes: &[&str]) -> Result<String, Error> {
        let value = self.required(var)?;
        match value.split_once("://") {
            Some((scheme, rest)) if schemes.contains(&scheme) && !rest.is_empty() => Ok(value),
            _ => Err(Error {
                var,
                reason: format!("expected a URL starting with {}://", schemes.join("://, ")),
            }),
        }
    }

    fn optional_url(&self, var: &'static str, schemes: &[&str]) -> Result<Option<String>, Error> {
        match self.get(var) {
            None => Ok(None),
            Some(_) => self.url(var, schemes).map(Some),
        }
    }

    fn parsed<T: std::str::FromStr>(&self, var: &'static str, default: T) -> Result<T, Error> {
        match self.get(var) {
            None => Ok(default),
            Some(text) => text.parse().map_err(|_| Error {
                var,
                reason: format!("'{text}' is not a valid {}", std::any::type_name::<T>()),
            }),
        }
    }

    fn positive<T>(&self, var: &'static str, default: T) -> Result<T, Error>
    where
        T: std::str::FromStr + PartialOrd + Default,
    {
        let value = self.parsed(var, default)?;
        if value > T::default() {
            Ok(value)
        } else {
            Err(Error {
                var,
                reason: "must be greater than zero".into(),
            })
        }
    }

    /// An inclusive range `FIRST-LAST` of ids above 1000 (below are system accounts).
    fn range(&self, var: &'static str, default: (u32, u32)) -> Result<(u32, u32), Error> {
        let Some(text) = self.get(var) else {
            return Ok(default);
        };
        let parsed = text
            .split_once('-')
            .and_then(|(a, b)| Some((a.trim().parse().ok()?, b.trim().parse().ok()?)));
        match parsed {
            Some((first, last)) if 1000 < first && first <= last => Ok((first, last)),
            _ => Err(Error {
                var,
                reason: format!(
                    "'{text}' is not a range FIRST-LAST of ids above 1000, e.g. 2000000-2000999"
                ),
            }),
        }
    }

    fn list(&self, var: &'static str, default: &str) -> Vec<String> {
        self.get(var)
            .unwrap_or_else(|| default.to_owned())
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// The fly adapter's settings; its token and apps are required when it is enabled.
    fn fly(&self) -> Result<FlyConfig, Error> {
        let enabled = self.adapters()?.iter().any(|a| a == "fly");
        let api_hostname = match self.get("FLY_API_HOSTNAME") {
            None => "https://api.machines.dev".to_owned(),
            Some(_) => {
                let url = self.url("FLY_API_HOSTNAME", &["https", "http"])?;
                let loopback = ["http://127.0.0.1", "http://localhost", "http://[::1]"]
                    .iter()
                    .any(|prefix| {
                        url.strip_prefix(prefix)
                            .is_some_and(|rest| rest.is_empty() || rest.starts_with([':', '/']))
                    });
                if url.starts_with("http://") && !loopback {
                    return Err(Error {
                        var: "FLY_API_HOSTNAME",
                        reason: "must be https:// (http:// only on loopback): the API token travels with every request".into(),
                    });
                }
                url
            }
        };
        let apps = self.list("FLY_APPS", "");
        if enabled && apps.is_empty() {
            return Err(Error {
                var: "FLY_APPS",
                reason: "must name the Fly apps fly tasks may use (comma-separated); a Machine gets its app's secrets, so tasks never pick any app the token reaches".into(),
            });
        }
        Ok(FlyConfig {
            api_token: if enabled {
                Some(self.required("FLY_API_TOKEN")?)
            } else {
                self.get("FLY_API_TOKEN")
            },
            api_hostname,
            apps,
        })
    }

    /// A list that must name something (an empty one would allow everything).
    fn non_empty_list(&self, var: &'static str, default: &str) -> Result<Vec<String>, Error> {
        let list = self.list(var, default);
        if list.is_empty() {
            return Err(Error {
                var,
                reason: "must name at least one host (e.g. localhost,api.example.com)".into(),
            });
        }
        Ok(list)
    }

    fn secret(&self, var: &'static str) -> Result<String, Error> {
        let value = self.required(var)?;
        if value.len() < 32 {
            return Err(Error {
                var,
                reason: "must be at least 32 bytes (try: openssl rand -hex 32)".into(),
            });
        }
        if EXAMPLE_SECRETS.contains(&value.as_str()) {
            return Err(Error {
                var,
                reason: "is the example value from .env.example or docker-compose.yml, which everyone knows; set your own (openssl rand -hex 32; scripts/services.sh makes one)".into(),
            });
        }
        Ok(value)
    }

    fn adapters(&self) -> Result<Vec<String>, Error> {
        let list = self
            .get("ADAPTERS_ENABLED")
            .unwrap_or_else(|| "mock".into());
        list.split(',')
            .map(str::trim)
            .filter(|name| !name.is_empty())
            .map(|name| {
                if KNOWN_ADAPTERS.contains(&name) {
                    Ok(name.to_owned())
                } else {
                    Err(Error {
                        var: "ADAPTERS_ENABLED",
                        reason: format!(
                            "unknown adapter '{name}'; known adapters: {}",
                            KNOWN_ADAPTERS.join(", ")
                        ),
                    })
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn load(pairs: &[(&str, &str)]) -> Result<Config, Error> {
        let mut map: HashMap<String, String> = [
            ("DATABASE_URL", "postgres://localhost/axon"),
            ("REDIS_URL", "redis://127.0.0.1:6379"),
            ("NATS_URL", "nats://127.0.0.1:4222"),
            ("HMAC_SECRET", "0123456789abcdef0123456789abcdef"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        for (k, v) in pairs {
            map.insert((*k).to_owned(), (*v).to_owned());
        }
        Config::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn defaults() {
        let config = load(&[]).expect("valid");
        assert_eq!(config.api_port, 8080);
        assert_eq!(config.adapters_enabled, vec!["mock"]);
        assert_eq!(config.worker.max_attempts, 3);
        assert_eq!(config.default_timeout_s, 3600);
        assert_eq!(config.max_timeout_s, 604_800);
        assert!(config.mcp.allowed_origins.is_empty());
        assert_eq!(config.mcp.allowed_hosts, ["localhost", "127.0.0.1", "::1"]);
        assert!(!config.mcp.fixtures);
        assert!(config.limits.enabled && config.limits.fail_open);
        assert_eq!(config.limits.of(crate::plans::Plan::Entry).concurrency, 10);
        assert!(!config.webhooks.allow_private);
    }

    #[test]
    fn each_bad_value_names_its_variable() {
        for (var, value) in [
            ("DATABASE_URL", "mysql://x"),
            ("REDIS_URL", "localhost:6379"),
            ("API_PORT", "eighty"),
            ("HMAC_SECRET", "short"),
            ("HMAC_SECRET", "change-me-change-me-change-me-change-me"),
            ("ADAPTERS_ENABLED", "mock,podman"),
            ("DOCKER_CPUS", "-1"),
            ("FLY_API_HOSTNAME", "api.machines.dev"),
            ("WORKER_CONCURRENCY", "0"),
            ("MCP_CONFORMANCE_FIXTURES", "yes"),
            ("MCP_ALLOWED_HOSTS", " , "),
            ("TASK_MAX_TIMEOUT_S", "0"),
            ("TASK_DEFAULT_TIMEOUT_S", "999999999"),
            ("METRICS_ADDR", "9464"),
            ("SHELL_UIDS", "5-1"),
            ("SHELL_UIDS", "0-100"),
            ("SHELL_MAX_PROCS", "0"),
            ("TASK_MAX_EVENTS", "0"),
            ("AXON_LOG_MAX_AGE_S", "-1"),
            ("RECEIPT_SIGNING_KEY_ED25519", "c2hvcnQ"),
            ("BILLING_ENABLED", "true"),
            ("RATE_LIMIT_FAIL", "sometimes"),
            ("ENTRY_CONCURRENCY", "0"),
            ("TRIAL_RATE_PER_S", "fast"),
            ("WEBHOOK_MAX_ATTEMPTS", "0"),
            (
                "RECEIPT_SIGNING_KEY_ED25519",
                "-----BEGIN PRIVATE KEY-----\nAA\n-----END PRIVATE KEY-----",
            ),
            (
                "RECEIPT_VERIFY_KEYS",
                "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo,nope",
            ),
            ("JWT_SECRET", "short"),
            ("CORS_ALLOWED_ORIGINS", "app.example.com"),
            ("CORS_ALLOWED_ORIGINS", "https://app.example.com/"),
            ("JWT_EXPIRY_SECONDS", "0"),
            ("PASSWORD_HASH", "md5"),
            ("JWT_SECRET", "0123456789abcdef0123456789abcdef"),
        ] {
            let err = load(&[(var, value)]).expect_err("invalid");
            assert_eq!(err.var, var, "{err}");
        }
    }

    #[test]
    fn receipt_keys_parse() {
        let config = load(&[
            (
                "RECEIPT_SIGNING_KEY_ED25519",
                "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A",
            ),
            (
                "RECEIPT_VERIFY_KEYS",
                "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo",
            ),
        ])
        .expect("valid");
        let signer = config.receipts.signer().expect("configured");
        assert_eq!(config.receipts.verify_keys, [signer.public().clone()]);
    }

    #[test]
    fn adapters_list_is_trimmed() {
        let config = load(&[("ADAPTERS_ENABLED", " mock , shell ")]).expect("valid");
        assert_eq!(config.adapters_enabled, vec!["mock", "shell"]);
    }

    #[test]
    fn the_fly_adapter_needs_its_token_and_apps_and_never_shows_the_token() {
        let err =
            load(&[("ADAPTERS_ENABLED", "mock,fly"), ("FLY_APPS", "a")]).expect_err("no token");
        assert_eq!(err.var, "FLY_API_TOKEN");
        let err =
            load(&[("ADAPTERS_ENABLED", "fly"), ("FLY_API_TOKEN", "t")]).expect_err("no apps");
        assert_eq!(err.var, "FLY_APPS");
        for (hostname, ok) in [
            ("http://api.machines.dev", false),
            ("http://localhost.example.com", false),
            ("http://127.0.0.1:4280", true),
            ("https://api.machines.dev", true),
        ] {
            let loaded = load(&[("FLY_API_HOSTNAME", hostname)]);
            assert_eq!(loaded.is_ok(), ok, "{hostname}");
        }
        let config = load(&[
            ("ADAPTERS_ENABLED", "fly"),
            ("FLY_API_TOKEN", "fo1_secret"),
            ("FLY_APPS", "build-runner, deploys"),
        ])
        .expect("valid");
        assert_eq!(config.worker.fly.apps, ["build-runner", "deploys"]);
        assert_eq!(config.worker.fly.api_hostname, "https://api.machines.dev");
        assert!(!format!("{:?}", config.worker.fly).contains("fo1_secret"));
    }
}
