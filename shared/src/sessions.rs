//! Which sign-in sessions may authenticate, as one process knows it: the sessions revoked
//! within the last access-token lifetime (older ones' access tokens have expired anyway),
//! loaded from Postgres and kept current through channel `axon_sessions` (the `sessions`
//! trigger notifies each revocation) and a reload every minute; and the sessions found
//! live, each asked of Postgres once. Until it is loaded, or while its listener is down,
//! each check asks Postgres.

use std::collections::HashSet;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

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
    live: Arc<RwLock<HashSet<Uuid>>>,
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
                if live.contains(&session) {
                    return Ok(true);
                }
            }
            None => {}
        }
        let live: Option<(bool,)> = sqlx::query_as(
            "SELECT revoked_at IS NULL AND expires_at > now() FROM sessions WHERE session_id = $1",
        )
        .bind(session)
        .fetch_optional(&self.pool)
        .await?;
        let live = live.is_some_and(|(live,)| live);
        if live {
            let mut known = self.live.write().unwrap_or_else(PoisonError::into_inner);
            if known.len() >= MAX_LIVE {
                known.clear();
            }
            known.insert(session);
        }
        Ok(live)
    }

    /// Keeps the cache current until `shutdown`.
    pub async fn follow(self, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                result = self.listen() => {
                    self.forget();
                    if let Err(e) = result {
                        tracing::warn!(error = %e, "session cache lost its listener; sessions are checked in Postgres meanwhile");
                    }
                }
                () = shutdown.cancelled() => return,
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
                () = shutdown.cancelled() => return,
            }
        }
    }

    async fn listen(&self) -> Result<(), sqlx::Error> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(CHANNEL).await?;
        self.reload().await?;
        loop {
            match tokio::time::timeout(RELOAD_EVERY, listener.try_recv()).await {
                Ok(Ok(None)) => return Ok(()),
                Ok(Err(e)) => return Err(e),
                Ok(Ok(Some(notification))) => match notification.payload().parse() {
                    Ok(session) => self.add(session),
                    Err(_) => self.reload().await?,
                },
                Err(_) => self.reload().await?,
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
    }
}
