//! Quotas checked when a task starts, by the tenant's plan: the longest `timeout_s`, tasks
//! started and not ended (the tenant's consumer holds at most that many unacked, so workers
//! never run more; a start over it is refused unless it asks to wait), and tasks a day (a
//! Redis counter per tenant and UTC day, reserved before the start is published and given
//! back when nothing new was stored).

use async_nats::jetstream::stream::Stream;
use chrono::{Duration as Days, Utc};
use redis::aio::ConnectionManager;
use shared::http::ApiError;
use shared::ids::TenantId;
use shared::plans::{LimitsConfig, Plan, PlanLimits, Plans};

/// How long a day counter is kept: past its day, and the one after.
const DAY_KEY_TTL_S: u64 = 172_800;

/// The plans, their limits, and the day counters.
#[derive(Clone)]
pub struct Quotas {
    plans: Plans,
    redis: ConnectionManager,
    config: LimitsConfig,
}

/// Today's count of started tasks.
enum Today {
    /// Counted, in this key.
    Counted(String),
    /// Redis did not answer and the limiter fails open.
    Uncounted,
    /// The day's quota is used up; it resets in `wait` seconds.
    Full { wait: u64 },
}

/// A task start that passed the quotas.
pub struct Admitted {
    /// The tenant's plan.
    pub plan: Plan,
    /// What it allows.
    pub limits: PlanLimits,
    /// The day counter it was counted in (given back if nothing is stored); none when Redis
    /// could not count it.
    day_key: Option<String>,
}

impl Quotas {
    /// Quotas from `config`, plans from `plans`, day counters in `redis`.
    pub fn new(plans: Plans, redis: ConnectionManager, config: LimitsConfig) -> Self {
        Self {
            plans,
            redis,
            config,
        }
    }

    /// Checks a start of `tenant` asking for `timeout_s` against its plan, and counts it
    /// for today. With `queue_if_busy` a tenant at its concurrency is not refused: the
    /// task waits in the tenant's queue (on `axon`) until one ends.
    pub async fn admit(
        &self,
        axon: &Stream,
        tenant: TenantId,
        timeout_s: Option<u32>,
        queue_if_busy: bool,
    ) -> Result<Admitted, ApiError> {
        let plan = self
            .plans
            .of(tenant)
            .await
            .map_err(|e| ApiError::unavailable("postgres", e))?;
        let limits = *self.config.of(plan);
        let name = plan.as_str();
        if let Some(asked) = timeout_s.filter(|t| *t > limits.max_timeout_s) {
            return Err(ApiError::too_many(
                "quota_exceeded",
                format!(
                    "timeout_s {asked} is over the max_timeout_s of plan {name} ({} s); ask for at most that, or move to a larger plan (a change of plan applies within a minute)",
                    limits.max_timeout_s
                ),
                60,
            ));
        }
        // Both in flight at once: one round trip's wait, not two.
        let (busy, counted) = tokio::join!(
            self.busy(axon, tenant, &limits, queue_if_busy),
            self.count_today(tenant, &limits)
        );
        let day_key = match counted {
            Ok(Today::Counted(key)) => Some(key),
            Ok(Today::Uncounted) => None,
            Ok(Today::Full { wait }) => {
                return Err(ApiError::too_many(
                    "quota_exceeded",
                    format!(
                        "{} tasks were started today, the tasks_per_day of plan {name}; it resets at 00:00 UTC (in {wait} s)",
                        limits.tasks_per_day
                    ),
                    wait,
                ));
            }
            Err(e) => return Err(e),
        };
        let admitted = Admitted {
            plan,
            limits,
            day_key,
        };
        if busy {
            self.give_back(&admitted).await;
            return Err(ApiError::too_many(
                "quota_exceeded",
                format!(
                    "{0} tasks are already started and not ended, the concurrency of plan {name}; one frees as soon as a task ends, or start with queue_if_busy: true to wait in the queue",
                    limits.concurrency
                ),
                1,
            ));
        }
        Ok(admitted)
    }

    /// Whether the tenant has as many tasks started and not ended as its plan allows
    /// (never, for a start that asks to wait).
    async fn busy(
        &self,
        axon: &Stream,
        tenant: TenantId,
        limits: &PlanLimits,
        queue_if_busy: bool,
    ) -> bool {
        if queue_if_busy {
            return false;
        }
        match axon
            .consumer_info(shared::queue::consumer_name(tenant))
            .await
        {
            // Waiting (not yet delivered) and taken (delivered, not acked: running).
            Ok(info) => {
                info.num_pending + info.num_ack_pending as u64 >= u64::from(limits.concurrency)
            }
            // No consumer yet: nothing is started. Otherwise the publish will tell.
            Err(e) => {
                tracing::debug!(%tenant, error = %e, "no queue to count started tasks by");
                false
            }
        }
    }

    /// Counts a start in today's counter of `tenant`, unless that makes too many.
    async fn count_today(&self, tenant: TenantId, limits: &PlanLimits) -> Result<Today, ApiError> {
        let now = Utc::now();
        let day_key = format!("quota:tasks:{tenant}:{}", now.format("%Y-%m-%d"));
        let mut redis = self.redis.clone();
        // INCR and a first expiry in one round trip, without a script (a script run costs
        // Redis several times more). A start past the day's limit takes its count back.
        let counted: Result<(i64, ()), _> = redis::pipe()
            .cmd("INCR")
            .arg(&day_key)
            .cmd("EXPIRE")
            .arg(&day_key)
            .arg(DAY_KEY_TTL_S)
            .arg("NX")
            .query_async(&mut redis)
            .await;
        let counted = match counted {
            Ok((n, ())) if n > i64::from(limits.tasks_per_day) => {
                self.uncount(&day_key).await;
                -1
            }
            Ok((n, ())) => n,
            // As the rate limiter does (RATE_LIMIT_FAIL): uncounted, or refused.
            Err(e) if self.config.fail_open => {
                tracing::warn!(error = %e, "cannot count today's tasks; starting uncounted (RATE_LIMIT_FAIL=open)");
                return Ok(Today::Uncounted);
            }
            Err(e) => return Err(ApiError::unavailable("redis", e)),
        };
        if counted >= 0 {
            return Ok(Today::Counted(day_key));
        }
        let midnight = (now.date_naive() + Days::days(1))
            .and_hms_opt(0, 0, 0)
            .expect("midnight exists")
            .and_utc();
        let wait = u64::try_from((midnight - now).num_seconds()).unwrap_or(0) + 1;
        Ok(Today::Full { wait })
    }

    /// Gives back the count of a start that stored nothing new (a retried start) or
    /// failed.
    pub async fn give_back(&self, admitted: &Admitted) {
        if let Some(day_key) = &admitted.day_key {
            self.uncount(day_key).await;
        }
    }

    /// Takes one start back from a day counter.
    async fn uncount(&self, day_key: &str) {
        let mut redis = self.redis.clone();
        let given: Result<i64, _> = redis::cmd("DECR")
            .arg(day_key)
            .query_async(&mut redis)
            .await;
        if let Err(e) = given {
            tracing::warn!(error = %e, "cannot give back a day's task count; the day counts one task more");
        }
    }
}
