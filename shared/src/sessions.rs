//! Which sign-in sessions may authenticate, as one process knows it: the sessions revoked
//! within the last access-token lifetime (older ones' access tokens have expired anyway),
//! loaded from Postgres and kept current through channel `axon_sessions` (the `sessions`
//! trigger notifies each revocation) and a reload every minute; and the sessions found
//! live, each asked of Postgres once. Until it is loaded, or while its listener is down,
//! each check asks Postgres.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The channel the `sessions` trigger notifies.
const CHANNEL: &str = "axon_sessions";
/// A reload even without a notification.
const RELOAD_EVERY: Duration = Duration::from_secs(60);

/// Revoked sessions, cached. Clones share the cache.
#[derive(Clone)]
pub struct Sessions {
    pool: PgPool,
    /// How far back revocations matter: the access-token lifetime, plus margin.
    window: Duration,
    revoked: Arc<RwLock<Option<HashSet<Uuid>>>>,
    /// Sessions found live, with when they expire.
    live: Arc<RwLock<HashMap<Uuid, DateTime<Utc>>>>,
}

/// Most live sessions remembered (past it, the set starts over).
const MAX_LIVE: usize = 100_000;

impl Sessions {
    /// A cache over `pool` for access tokens living `access_ttl`.
    pub fn new(pool: PgPool, access_ttl: Duration) -> Self {
        Self {
            pool,
            window: access_ttl + Duration::from_secs(60),
            revoked: Arc::default(),
            live: Arc::default(),
        }
    }

    /// Whether `session` may still authenticate: not revoked, not expired.
    pub async fn is_live(&self, session: Uuid) -> Result<bool, sqlx::Error> {
        let revoked = {
            let revoked = self.revoked.read().unwrap_or_else(PoisonError::into_inner);
            revoked.as_ref().map(|set| set.contains(&session))
        };
        match revoked {
            Some(true) => return Ok(false),
            Some(false) => {
                let live = self.live.read().unwrap_or_else(PoisonError::into_inner);
                if let Some(expires_at) = live.get(&session) {
                    return Ok(*expires_at > Utc::now());
                }
            }
            None => {}
        }
        let found: Option<(bool, DateTime<Utc>)> = sqlx::query_as(
            "SELECT revoked_at IS NULL, expires_at FROM sessions WHERE session_id = $1",
        )
        .bind(session)
        .fetch_optional(&self.pool)
        .await?;
        let Some((unrevoked, expires_at)) = found else {
            return Ok(false);
        };
        if unrevoked && revoked.is_some() {
            let mut known = self.live.write().unwrap_or_else(PoisonError::into_inner);
            if known.len() >= MAX_LIVE {
                known.clear();
            }
            known.insert(session, expires_at);
        }
        Ok(unrevoked && expires_at > Utc::now())
    }

    /// Marks `session` revoked here at once (other processes hear of it from Postgres).
    pub fn revoked_here(&self, session: Uuid) {
        self.add(session);
    }

    /// Keeps the cache current until `shutdown`.
    pub async fn follow(self, shutdown: CancellationToken) {
        let listen = || self.listen();
        crate::db::keep_listening("the session cache", shutdown, listen, || self.forget()).await;
    }

    async fn listen(&self) -> Result<(), sqlx::Error> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(CHANNEL).await?;
        self.reload().await?;
        let mut reload = tokio::time::interval(RELOAD_EVERY);
        reload.reset();
        loop {
            tokio::select! {
                notification = listener.try_recv() => match notification? {
                    None => return Ok(()),
                    Some(notification) => match notification.payload().parse() {
                        Ok(session) => self.add(session),
                        Err(_) => self.reload().await?,
                    },
                },
                _ = reload.tick() => self.reload().await?,
            }
        }
    }

    async fn reload(&self) -> Result<(), sqlx::Error> {
        let rows: Vec<(Uuid,)> = sqlx::query_as(
            "SELECT session_id FROM sessions WHERE revoked_at > now() - make_interval(secs => $1)",
        )
        .bind(self.window.as_secs_f64())
        .fetch_all(&self.pool)
        .await?;
        let set = rows.into_iter().map(|(id,)| id).collect();
        *self.revoked.write().unwrap_or_else(PoisonError::into_inner) = Some(set);
        Ok(())
    }

    fn add(&self, session: Uuid) {
        self.live
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&session);
        if let Some(set) = self
            .revoked
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .as_mut()
        {
            set.insert(session);
        }
    }

    fn forget(&self) {
        *self.revoked.write().unwrap_or_else(PoisonError::into_inner) = None;
        self.live
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}
