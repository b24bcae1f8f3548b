//! Rate limits in front of every public route: per key (or sign-in session) and per tenant
//! by the tenant's plan, per address on sign-in (register, login, refresh) and for
//! requests without a valid key or token. Allowed
//! answers carry `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset`; refused
//! ones are 429 with `Retry-After` as well. The caller it authenticated rides in the
//! request, so the route does not authenticate again.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use shared::auth::Principal;
use shared::http::ApiError;
use shared::keys::Keys;
use shared::plans::{LimitsConfig, Plan, Plans};
use shared::ratelimit::{Bucket, Decision, Limiter};

/// What the middleware needs.
#[derive(Clone)]
pub struct RateLimits {
    /// Authenticates callers.
    pub keys: Keys,
    /// Tenants' plans.
    pub plans: Plans,
    /// The buckets.
    pub limiter: Limiter,
    /// The plans' rates and the failure mode.
    pub config: LimitsConfig,
}

/// What a request is limited by.
enum Class {
    /// Health, readiness and published keys: never limited.
    Free,
    /// Sign-in: the peer address.
    SignIn,
    /// Everything else: the caller's key and tenant, when it names a valid one.
    Caller,
}

fn class(path: &str) -> Class {
    match path {
        "/healthz" | "/readyz" => Class::Free,
        "/auth/register" | "/auth/login" | "/auth/refresh" => Class::SignIn,
        _ if path.starts_with("/.well-known/") => Class::Free,
        _ => Class::Caller,
    }
}

/// The middleware (`axum::middleware::from_fn_with_state`).
pub async fn limit(State(limits): State<RateLimits>, mut request: Request, next: Next) -> Response {
    let (buckets, what) = match class(request.uri().path()) {
        Class::Free => return next.run(request).await,
        Class::SignIn => {
            let Some(address) = peer(&request) else {
                return next.run(request).await;
            };
            let per_min = limits.config.auth_per_min;
            let bucket = Bucket {
                key: format!("rl:signin:{address}"),
                per_second: f64::from(per_min) / 60.0,
                burst: per_min,
            };
            let what = format!("{per_min} sign-in requests a minute from one address");
            (vec![bucket], what)
        }
        Class::Caller => {
            let Ok(principal) = shared::http::authenticate(&limits.keys, request.headers()).await
            else {
                return anonymous(&limits, request, next).await;
            };
            let plan = match limits.plans.of(principal.tenant_id).await {
                Ok(plan) => plan,
                Err(e) => return ApiError::unavailable("postgres", e).into_response(),
            };
            let buckets = caller_buckets(&limits.config, &principal, plan);
            request.extensions_mut().insert(principal);
            let of = limits.config.of(plan);
            let what = format!(
                "{} requests a second per key and {} per tenant on plan {}",
                of.key_rate,
                of.tenant_rate,
                plan.as_str()
            );
            (buckets, what)
        }
    };
    check(&limits, request, next, buckets, &what).await
}

/// A request without a valid key or token: the route answers 401 (or takes a resume
/// token) itself, within the address's rate for such requests.
async fn anonymous(limits: &RateLimits, request: Request, next: Next) -> Response {
    let Some(address) = peer(&request) else {
        return next.run(request).await;
    };
    let per_s = limits.config.anon_per_s;
    let bucket = Bucket {
        key: format!("rl:anon:{address}"),
        per_second: f64::from(per_s),
        burst: per_s,
    };
    let what = format!("{per_s} requests a second from one address without a valid key or token");
    check(limits, request, next, vec![bucket], &what).await
}

/// The peer's address key (an IPv6 /64), if the server recorded the peer.
fn peer(request: &Request) -> Option<String> {
    let ConnectInfo(peer) = request.extensions().get::<ConnectInfo<SocketAddr>>()?;
    Some(command_api::accounts::throttle::address_key(peer.ip()))
}

/// Counts the request in `buckets` and runs it, or refuses it.
async fn check(
    limits: &RateLimits,
    request: Request,
    next: Next,
    buckets: Vec<Bucket>,
    what: &str,
) -> Response {
    match limits.limiter.check(&buckets).await {
        Ok(decision) if decision.allowed => {
            let mut response = next.run(request).await;
            rate_headers(response.headers_mut(), &decision);
            response
        }
        Ok(decision) => refused(&decision, what),
        Err(e) => {
            warn_unavailable(&e);
            if limits.config.fail_open {
                next.run(request).await
            } else {
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "rate_limiter_unavailable",
                    "the rate limiter cannot reach Redis and this server refuses requests until it can (RATE_LIMIT_FAIL=closed); retry shortly",
                )
                .into_response()
            }
        }
    }
}

/// The buckets of an authenticated caller: its key (or session) and its tenant.
fn caller_buckets(config: &LimitsConfig, principal: &Principal, plan: Plan) -> Vec<Bucket> {
    let of = config.of(plan);
    vec![
        Bucket {
            key: format!("rl:key:{}", principal.key_id),
            per_second: f64::from(of.key_rate),
            burst: of.key_rate,
        },
        Bucket {
            key: format!("rl:tenant:{}", principal.tenant_id),
            per_second: f64::from(of.tenant_rate),
            burst: of.tenant_rate,
        },
    ]
}

/// Whole seconds, rounded up (a client that waits that long is allowed).
fn seconds(duration: Duration) -> u64 {
    duration.as_micros().div_ceil(1_000_000) as u64
}

fn rate_headers(headers: &mut HeaderMap, decision: &Decision) {
    let mut set = |name: &'static str, value: u64| {
        headers.insert(HeaderName::from_static(name), HeaderValue::from(value));
    };
    set("ratelimit-limit", u64::from(decision.limit));
    set("ratelimit-remaining", u64::from(decision.remaining));
    set("ratelimit-reset", seconds(decision.reset));
}

fn refused(decision: &Decision, what: &str) -> Response {
    let retry = seconds(decision.retry_after).max(1);
    let mut response = ApiError::too_many(
        "rate_limited",
        format!("too many requests: the limit is {what}; retry after {retry} s (Retry-After)"),
        retry,
    )
    .into_response();
    rate_headers(response.headers_mut(), decision);
    response
}

/// Logs that Redis did not answer, at most once every 10 s.
fn warn_unavailable(error: &redis::RedisError) {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = shared::time::unix_now();
    let last = LAST.load(Ordering::Relaxed);
    if now >= last + 10
        && LAST
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        tracing::warn!(error = %error, "the rate limiter cannot reach Redis");
    }
    metrics::counter!("axon_ratelimit_unavailable_total").increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_fall_in_their_class() {
        assert!(matches!(class("/healthz"), Class::Free));
        assert!(matches!(class("/.well-known/axontask/keys"), Class::Free));
        assert!(matches!(class("/auth/login"), Class::SignIn));
        assert!(matches!(class("/auth/logout"), Class::Caller));
        assert!(matches!(class("/mcp/start_task"), Class::Caller));
        assert!(matches!(class("/mcp"), Class::Caller));
    }

    #[test]
    fn waits_round_up_to_whole_seconds() {
        assert_eq!(seconds(Duration::from_millis(1)), 1);
        assert_eq!(seconds(Duration::from_millis(1000)), 1);
        assert_eq!(seconds(Duration::from_millis(1001)), 2);
        assert_eq!(seconds(Duration::ZERO), 0);
    }
}
