//! Rate limits: GCRA buckets (the generic cell rate algorithm, a token bucket kept as one
//! timestamp) in Redis. Every bucket of a request is checked in one script, one round trip,
//! on Redis's clock; a request is counted in all of them only if all allow it.

use std::time::Duration;

use redis::Script;
use redis::aio::ConnectionManager;

/// How long the limiter waits for Redis before it counts as unreachable.
const PATIENCE: Duration = Duration::from_millis(250);

/// For each bucket `i` (`KEYS[i]`): `ARGV[2i-1]` the microseconds between requests at the
/// sustained rate, `ARGV[2i]` how many may come at once. A bucket holds its theoretical
/// arrival time (TAT); a request is allowed while `TAT - now` is at most
/// `interval * (burst - 1)`. Answers `{allowed, limit, remaining, reset_us, retry_us}` for
/// the tightest bucket.
const GCRA: &str = r"
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local allowed, retry = 1, 0
local limit, remaining, reset = 0, -1, 0
local tats = {}
for i = 1, #KEYS do
  local interval = tonumber(ARGV[2 * i - 1])
  local burst = tonumber(ARGV[2 * i])
  local tolerance = interval * (burst - 1)
  local tat = tonumber(redis.call('GET', KEYS[i])) or now
  if tat < now then tat = now end
  local left, ahead
  if tat - now > tolerance then
    allowed = 0
    retry = math.max(retry, tat - now - tolerance)
    left, ahead = 0, tat - now
  else
    tats[i] = tat + interval
    ahead = tats[i] - now
    if ahead > tolerance then left = 0 else left = math.floor((tolerance - ahead) / interval) + 1 end
  end
  if remaining < 0 or left < remaining then
    limit, remaining, reset = burst, left, ahead
  end
end
if allowed == 1 then
  for i = 1, #KEYS do
    redis.call('SET', KEYS[i], tats[i], 'PX', math.ceil((tats[i] - now) / 1000) + 1)
  end
end
return {allowed, limit, remaining, reset, retry}
";

/// A bucket: its Redis key, sustained rate a second, and how many may come at once.
#[derive(Debug, Clone, PartialEq)]
pub struct Bucket {
    /// Its Redis key (`rl:…`).
    pub key: String,
    /// Requests a second, sustained.
    pub per_second: f64,
    /// Requests that may come at once.
    pub burst: u32,
}

/// The limiter's answer for one request (the tightest of its buckets).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    /// Whether the request may go on (and was counted).
    pub allowed: bool,
    /// `RateLimit-Limit`: requests the tightest bucket lets through at once.
    pub limit: u32,
    /// `RateLimit-Remaining`: requests that may follow at once.
    pub remaining: u32,
    /// `RateLimit-Reset`: until the tightest bucket is full again.
    pub reset: Duration,
    /// `Retry-After` of a refused request: until it would be allowed.
    pub retry_after: Duration,
}

/// Buckets in Redis.
#[derive(Clone)]
pub struct Limiter {
    redis: ConnectionManager,
    script: std::sync::Arc<Script>,
}

impl Limiter {
    /// A limiter on `redis`.
    pub fn new(redis: ConnectionManager) -> Self {
        Self {
            redis,
            script: std::sync::Arc::new(Script::new(GCRA)),
        }
    }

    /// Counts one request in every bucket if all allow it. An error means Redis did not
    /// answer in time.
    pub async fn check(&self, buckets: &[Bucket]) -> Result<Decision, redis::RedisError> {
        let mut invocation = self.script.prepare_invoke();
        for bucket in buckets {
            let interval_us = (1_000_000.0 / bucket.per_second).ceil().max(1.0) as u64;
            invocation
                .key(&bucket.key)
                .arg(interval_us)
                .arg(bucket.burst.max(1));
        }
        let mut redis = self.redis.clone();
        let answer: (i64, i64, i64, i64, i64) =
            tokio::time::timeout(PATIENCE, invocation.invoke_async(&mut redis))
                .await
                .map_err(|_| {
                    redis::RedisError::from((redis::ErrorKind::Io, "the rate limiter timed out"))
                })??;
        let (allowed, limit, remaining, reset_us, retry_us) = answer;
        let micros = |us: i64| Duration::from_micros(u64::try_from(us).unwrap_or(0));
        Ok(Decision {
            allowed: allowed == 1,
            limit: u32::try_from(limit).unwrap_or(u32::MAX),
            remaining: u32::try_from(remaining).unwrap_or(0),
            reset: micros(reset_us),
            retry_after: micros(retry_us),
        })
    }
}
