//! Postgres for sign-in: users, their tenants and memberships, and sessions.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

/// A new user, their own tenant and their owner membership.
#[derive(Debug)]
pub struct Registered {
    /// The user.
    pub user: Uuid,
    /// Their tenant.
    pub tenant: Uuid,
}

/// Why a registration stores nothing.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    /// The email has an account.
    #[error("the email is taken")]
    Taken,
    /// Postgres failed.
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// Stores a user, a tenant named after the email and its id, and the owner membership,
/// in one transaction.
pub async fn register(
    pool: &PgPool,
    email: &str,
    password_hash: &str,
    name: Option<&str>,
) -> Result<Registered, RegisterError> {
    let mut tx = pool.begin().await?;
    let user = Uuid::now_v7();
    let inserted = sqlx::query(
        "INSERT INTO users (user_id, email, password_hash, name) VALUES ($1, $2, $3, $4)
         ON CONFLICT (email) DO NOTHING",
    )
    .bind(user)
    .bind(email)
    .bind(password_hash)
    .bind(name)
    .execute(&mut *tx)
    .await?;
    if inserted.rows_affected() == 0 {
        return Err(RegisterError::Taken);
    }
    let tenant = Uuid::now_v7();
    // The name carries the id: an email is not verified, so a tenant named after it alone
    // could be one an operator later makes keys for (`axontask keys create --tenant`).
    // Sign-ups start on the trial plan.
    sqlx::query("INSERT INTO tenants (tenant_id, name, plan) VALUES ($1, $2, 'trial')")
        .bind(tenant)
        .bind(format!("{email} ({tenant})"))
        .execute(&mut *tx)
        .await?;
    sqlx::query("INSERT INTO memberships (tenant_id, user_id, role) VALUES ($1, $2, 'owner')")
        .bind(tenant)
        .bind(user)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Registered { user, tenant })
}

/// A user who may sign in, with the tenant and role the session acts as.
#[derive(Debug, sqlx::FromRow)]
pub struct Account {
    /// The user.
    pub user_id: Uuid,
    /// Their password's PHC string.
    pub password_hash: String,
    /// The tenant (their oldest membership, unless one was asked for).
    pub tenant_id: Uuid,
    /// Their role there.
    pub role: String,
}

/// The account of `email`, acting in `tenant` (or its oldest membership).
pub async fn account(
    pool: &PgPool,
    email: &str,
    tenant: Option<Uuid>,
) -> Result<Option<Account>, sqlx::Error> {
    sqlx::query_as(
        "SELECT u.user_id, u.password_hash, m.tenant_id, m.role
         FROM users u JOIN memberships m ON m.user_id = u.user_id
         WHERE u.email = $1 AND ($2::uuid IS NULL OR m.tenant_id = $2)
         ORDER BY m.created_at LIMIT 1",
    )
    .bind(email)
    .bind(tenant)
    .fetch_optional(pool)
    .await
}

/// Starts a session whose current refresh token is `jti`.
pub async fn open_session(
    pool: &PgPool,
    session: Uuid,
    user: Uuid,
    tenant: Uuid,
    jti: Uuid,
    expires_at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO sessions (session_id, user_id, tenant_id, current_jti, expires_at)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(session)
    .bind(user)
    .bind(tenant)
    .bind(jti)
    .bind(expires_at)
    .execute(pool)
    .await?;
    Ok(())
}

/// What presenting a refresh token did.
#[derive(Debug)]
pub enum Rotation {
    /// It was the current one: `next` is now, and this is the member's role.
    Rotated {
        /// The user's role in the session's tenant now.
        role: String,
    },
    /// An older one of the family: the session is revoked.
    Reused,
    /// The session is revoked, expired, unknown, or its user left the tenant.
    Ended,
}

/// Replaces `session`'s current refresh token `jti` with `next`; a token of the family that
/// is not current revokes the whole session.
pub async fn rotate(
    pool: &PgPool,
    session: Uuid,
    jti: Uuid,
    next: Uuid,
) -> Result<Rotation, sqlx::Error> {
    let rotated: Option<(Option<String>,)> = sqlx::query_as(
        "UPDATE sessions s SET current_jti = $3
         WHERE s.session_id = $1 AND s.current_jti = $2 AND s.revoked_at IS NULL AND s.expires_at > now()
         RETURNING (SELECT m.role FROM memberships m WHERE m.tenant_id = s.tenant_id AND m.user_id = s.user_id)",
    )
    .bind(session)
    .bind(jti)
    .bind(next)
    .fetch_optional(pool)
    .await?;
    match rotated {
        Some((Some(role),)) => return Ok(Rotation::Rotated { role }),
        Some((None,)) => {
            revoke(pool, session, "the user left the tenant").await?;
            return Ok(Rotation::Ended);
        }
        None => {}
    }
    let reused = sqlx::query(
        "UPDATE sessions SET revoked_at = now(), revoked_reason = 'a rotated refresh token was used again'
         WHERE session_id = $1 AND revoked_at IS NULL AND current_jti <> $2",
    )
    .bind(session)
    .bind(jti)
    .execute(pool)
    .await?;
    Ok(if reused.rows_affected() > 0 {
        Rotation::Reused
    } else {
        Rotation::Ended
    })
}

/// Revokes `session` (its access and refresh tokens stop working on every process);
/// whether there was such a live session.
pub async fn revoke(pool: &PgPool, session: Uuid, reason: &str) -> Result<bool, sqlx::Error> {
    let revoked = sqlx::query(
        "UPDATE sessions SET revoked_at = now(), revoked_reason = $2
         WHERE session_id = $1 AND revoked_at IS NULL",
    )
    .bind(session)
    .bind(reason)
    .execute(pool)
    .await?;
    Ok(revoked.rows_affected() > 0)
}
