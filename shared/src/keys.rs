//! The credential caches of one process. API keys: every live key, loaded from Postgres and reloaded
//! whenever `api_keys` changes (its trigger notifies channel `axon_api_keys`) and once a
//! minute. A key the cache lacks is looked up in Postgres, at most [`MISSES_PER_SECOND`]
//! times a second, so a flood of made-up keys costs Postgres almost nothing; past that,
//! the cache's answer stands. Until it is loaded (or while its listener is down), every
//! lookup asks Postgres.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::auth::{self, Principal};
use crate::ids::TenantId;
use crate::sessions::Sessions;
use crate::tokens::{TokenError, TokenType, Tokens};

/// Postgres lookups of keys the cache lacks, per second (and at most at once).
pub const MISSES_PER_SECOND: f64 = 50.0;
/// The most keys the cache holds; the others are found as misses (rate-limited).
const MAX_KEYS: usize = 100_000;
/// A reload even without a notification (a missed one, keys that expired).
const RELOAD_EVERY: Duration = Duration::from_secs(60);
/// The channel the `api_keys` trigger notifies.
const CHANNEL: &str = "axon_api_keys";

/// `key_hash, id, tenant_id, scopes, expires_at` of `api_keys`.
type KeyRow = (String, Uuid, Uuid, Vec<String>, Option<DateTime<Utc>>);

/// A live key as cached.
#[derive(Clone)]
struct Entry {
    principal: Principal,
    expires_at: Option<DateTime<Utc>>,
}

/// The live keys by hash, if loaded.
type Known = Option<HashMap<String, Entry>>;

/// Misses allowed to reach Postgres: a token bucket.
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// API keys, cached; and, when sign-in is configured, the tokens and sessions that
/// `Authorization: Bearer` is checked against. Clones share the caches.
#[derive(Clone)]
pub struct Keys {
    pool: PgPool,
    known: Arc<RwLock<Known>>,
    misses: Arc<Mutex<Bucket>>,
    bearer: Option<(Arc<Tokens>, Sessions)>,
    /// Keys used since `last_used_at` was last written.
    used: Arc<Mutex<HashSet<Uuid>>>,
}

/// How often `api_keys.last_used_at` is written (one statement for every key used).
const USAGE_EVERY: Duration = Duration::from_secs(5);

impl Keys {
    /// A cache over `pool`, empty until [`Keys::follow`] loads it.
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            known: Arc::default(),
            misses: Arc::new(Mutex::new(Bucket {
                tokens: MISSES_PER_SECOND,
                at: Instant::now(),
            })),
            bearer: None,
            used: Arc::default(),
        }
    }

    /// The same caches, also accepting access tokens of `tokens`.
    pub fn with_tokens(self, tokens: Tokens) -> Self {
        let sessions = Sessions::new(self.pool.clone(), tokens.access_ttl);
        Self {
            bearer: Some((Arc::new(tokens), sessions)),
            ..self
        }
    }

    /// Marks a session this process just ended as revoked here at once.
    pub fn session_ended(&self, session: Uuid) {
        if let Some((_, sessions)) = &self.bearer {
            sessions.revoked_here(session);
        }
    }

    /// The tokens sign-in issues, if configured.
    pub fn tokens(&self) -> Option<&Tokens> {
        self.bearer.as_ref().map(|(tokens, _)| tokens.as_ref())
    }

    /// The principal of an access token: `Ok(None)` if its session was revoked or ended.
    pub async fn lookup_token(
        &self,
        token: &str,
    ) -> Result<Result<Principal, TokenError>, sqlx::Error> {
        let Some((tokens, sessions)) = &self.bearer else {
            return Ok(Err(TokenError::Invalid));
        };
        let claims = match tokens.verify(token, TokenType::Access) {
            Ok(claims) => claims,
            Err(e) => return Ok(Err(e)),
        };
        if !sessions.is_live(claims.sid).await? {
            return Ok(Err(TokenError::Invalid));
        }
        Ok(Ok(Principal {
            tenant_id: TenantId(claims.tenant_id),
            key_id: claims.sid,
            scopes: auth::role_scopes(&claims.role),
        }))
    }

    /// The pool the keys are read from.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The principal of a well-formed plaintext key: `None` if unknown, revoked or expired.
    pub async fn lookup(&self, key: &str) -> Result<Option<Principal>, sqlx::Error> {
        let hash = auth::hash_key(key);
        let cached = {
            let known = self.known.read().unwrap_or_else(PoisonError::into_inner);
            known.as_ref().map(|keys| {
                keys.get(&hash)
                    .filter(|e| e.expires_at.is_none_or(|at| at > Utc::now()))
                    .map(|e| e.principal.clone())
            })
        };
        let answer = |source: &'static str| {
            metrics::counter!("axon_key_lookups_total", "source" => source).increment(1);
        };
        let principal = match cached {
            Some(Some(principal)) => {
                answer("cache");
                Ok(Some(principal))
            }
            // Unknown to the cache, and no Postgres lookup left this second.
            Some(None) if !self.may_miss() => {
                answer("cache");
                Ok(None)
            }
            // Not loaded, or unknown (maybe newer than the last reload, or past MAX_KEYS).
            _ => {
                answer("postgres");
                auth::lookup(&self.pool, key).await
            }
        }?;
        if let Some(principal) = &principal {
            self.used
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(principal.key_id);
        }
        Ok(principal)
    }

    /// Drops a key this process just revoked from its cache at once (the others reload
    /// on the notification).
    pub fn key_revoked(&self, key_id: Uuid) {
        if let Some(keys) = self
            .known
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .as_mut()
        {
            keys.retain(|_, entry| entry.principal.key_id != key_id);
        }
    }

    /// Writes `last_used_at` of the keys used, every [`USAGE_EVERY`], until `shutdown`.
    async fn record_usage(&self, shutdown: CancellationToken) {
        let mut every = tokio::time::interval(USAGE_EVERY);
        loop {
            tokio::select! {
                _ = every.tick() => {}
                () = shutdown.cancelled() => return,
            }
            let used: Vec<Uuid> =
                std::mem::take(&mut *self.used.lock().unwrap_or_else(PoisonError::into_inner))
                    .into_iter()
                    .collect();
            if used.is_empty() {
                continue;
            }
            let written =
                sqlx::query("UPDATE api_keys SET last_used_at = now() WHERE id = ANY($1)")
                    .bind(&used)
                    .execute(&self.pool)
                    .await;
            if let Err(e) = written {
                tracing::warn!(error = %e, "writing keys' last use failed; retrying with the next batch");
                self.used
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .extend(used);
            }
        }
    }

    /// Takes a token for a Postgres lookup of a miss, if one is left.
    fn may_miss(&self) -> bool {
        let mut bucket = self.misses.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let refill = now.duration_since(bucket.at).as_secs_f64() * MISSES_PER_SECOND;
        bucket.tokens = (bucket.tokens + refill).min(MISSES_PER_SECOND);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Keeps the cache current until `shutdown`: listens for changes, reloads on each and
    /// every minute; while the listener is down, lookups go to Postgres. Also writes the
    /// keys' `last_used_at` in batches.
    pub async fn follow(self, shutdown: CancellationToken) {
        let usage = self.record_usage(shutdown.clone());
        match self.bearer.clone() {
            Some((_, sessions)) => {
                tokio::join!(
                    sessions.follow(shutdown.clone()),
                    self.follow_keys(shutdown),
                    usage
                );
            }
            None => {
                tokio::join!(self.follow_keys(shutdown), usage);
            }
        }
    }

    async fn follow_keys(&self, shutdown: CancellationToken) {
        let listen = || self.listen();
        crate::db::keep_listening("the API key cache", shutdown, listen, || self.forget()).await;
    }

    async fn listen(&self) -> Result<(), sqlx::Error> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(CHANNEL).await?;
        self.reload().await?;
        loop {
            match tokio::time::timeout(RELOAD_EVERY, listener.try_recv()).await {
                // The connection dropped: notifications may have been lost.
                Ok(Ok(None)) => return Ok(()),
                Ok(Err(e)) => return Err(e),
                Ok(Ok(Some(_))) | Err(_) => self.reload().await?,
            }
        }
    }

    async fn reload(&self) -> Result<(), sqlx::Error> {
        let rows: Vec<KeyRow> = sqlx::query_as(
            "SELECT key_hash, id, tenant_id, scopes, expires_at FROM api_keys
             WHERE revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())
             LIMIT $1",
        )
        .bind(i64::try_from(MAX_KEYS).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        let keys = rows
            .into_iter()
            .map(|(hash, key_id, tenant, scopes, expires_at)| {
                let principal = Principal {
                    tenant_id: TenantId(tenant),
                    key_id,
                    scopes,
                };
                (
                    hash,
                    Entry {
                        principal,
                        expires_at,
                    },
                )
            })
            .collect();
        *self.known.write().unwrap_or_else(PoisonError::into_inner) = Some(keys);
        Ok(())
    }

    fn forget(&self) {
        *self.known.write().unwrap_or_else(PoisonError::into_inner) = None;
    }
}
