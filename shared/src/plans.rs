//! Plans and what each allows (rates and quotas, from the environment), and the tenant's
//! plan, cached per process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use sqlx::PgPool;

use crate::ids::TenantId;

/// A tenant's plan (`tenants.plan`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Plan {
    /// Self-service sign-ups.
    Trial,
    /// The default of `axontask keys create`.
    Entry,
    /// More of everything.
    Pro,
    /// The most of everything.
    Enterprise,
}

impl Plan {
    /// Every plan, smallest first.
    pub const ALL: [Plan; 4] = [Plan::Trial, Plan::Entry, Plan::Pro, Plan::Enterprise];

    /// Its name in `tenants.plan` and in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Plan::Trial => "trial",
            Plan::Entry => "entry",
            Plan::Pro => "pro",
            Plan::Enterprise => "enterprise",
        }
    }

    /// The plan named `name`.
    pub fn parse(name: &str) -> Option<Plan> {
        Plan::ALL.into_iter().find(|p| p.as_str() == name)
    }
}

/// What one plan allows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlanLimits {
    /// `{PLAN}_RATE_PER_S`: requests a second one key (or sign-in session) may make; a
    /// second's worth may come at once.
    pub key_rate: u32,
    /// `{PLAN}_TENANT_RATE_PER_S`: requests a second all of a tenant's keys may make.
    pub tenant_rate: u32,
    /// `{PLAN}_CONCURRENCY`: tasks of the tenant started and not ended (waiting or running).
    pub concurrency: u32,
    /// `{PLAN}_TASKS_PER_DAY`: tasks the tenant may start a day (UTC).
    pub tasks_per_day: u32,
    /// `{PLAN}_SSE_STREAMS`: SSE streams the tenant may have open on one query-api process.
    pub sse_streams: u32,
    /// `{PLAN}_MAX_TIMEOUT_S`: the longest `timeout_s` its tasks may ask.
    pub max_timeout_s: u32,
}

/// Rate limits and quotas.
#[derive(Debug, Clone, PartialEq)]
pub struct LimitsConfig {
    /// `LIMITS_ENABLED` (default true): rate limits and quotas apply (false only for
    /// benchmarks and trusted single-tenant installations).
    pub enabled: bool,
    /// `RATE_LIMIT_FAIL` (`open` or `closed`, default `open`): what the rate limiter does
    /// when Redis cannot answer: let requests through, or refuse them with 503.
    pub fail_open: bool,
    /// `AUTH_RATE_PER_MIN` (default 10): sign-in requests (register, login, refresh) a
    /// minute from one address (an IPv6 /64).
    pub auth_per_min: u32,
    /// `ANON_RATE_PER_S` (default 20): requests a second from one address without a valid
    /// key or token (resume-token streams, wrong keys).
    pub anon_per_s: u32,
    /// Trial, entry, pro, enterprise, in [`Plan::ALL`] order.
    pub plans: [PlanLimits; 4],
}

impl LimitsConfig {
    /// What `plan` allows.
    pub fn of(&self, plan: Plan) -> &PlanLimits {
        &self.plans[plan as usize]
    }
}

/// How long a tenant's plan is taken as known (a changed plan applies within this).
const FRESH: Duration = Duration::from_secs(60);

/// Tenants' plans, read from Postgres and kept for [`FRESH`].
#[derive(Clone)]
pub struct Plans {
    pool: PgPool,
    known: Arc<Mutex<HashMap<TenantId, (Plan, Instant)>>>,
}

impl Plans {
    /// An empty cache over `pool`.
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            known: Arc::default(),
        }
    }

    /// `tenant`'s plan (entry for a tenant without a row, which cannot hold a key).
    pub async fn of(&self, tenant: TenantId) -> Result<Plan, sqlx::Error> {
        if let Some((plan, at)) = self.lock().get(&tenant)
            && at.elapsed() < FRESH
        {
            return Ok(*plan);
        }
        let name: Option<String> =
            sqlx::query_scalar("SELECT plan FROM tenants WHERE tenant_id = $1")
                .bind(tenant.0)
                .fetch_optional(&self.pool)
                .await?;
        let plan = name.as_deref().and_then(Plan::parse).unwrap_or(Plan::Entry);
        self.lock().insert(tenant, (plan, Instant::now()));
        Ok(plan)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TenantId, (Plan, Instant)>> {
        self.known.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
