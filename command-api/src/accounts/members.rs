//! Postgres for a tenant's members: list, add an existing user, change a role, remove.
//! A tenant always keeps an owner; a member whose role changes or who is removed has their
//! sessions in that tenant ended (their tokens named the old role).

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

/// Roles, from most to least powerful.
pub const ROLES: [&str; 4] = ["owner", "admin", "member", "viewer"];

/// One member.
#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct Member {
    /// The user.
    pub user_id: Uuid,
    /// Their email.
    pub email: String,
    /// Their name, if given.
    pub name: Option<String>,
    /// Their role here.
    pub role: String,
    /// When they joined.
    pub created_at: DateTime<Utc>,
}

/// Why a change stores nothing.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// No account has that email.
    #[error("no account has this email; ask them to register at /auth/register first")]
    NoSuchUser,
    /// They are a member already.
    #[error("they are a member already; change their role with PATCH /api/members/{{user_id}}")]
    AlreadyMember,
    /// Not a member of this tenant.
    #[error("no such member in this tenant")]
    NotMember,
    /// It would leave the tenant without an owner.
    #[error("the tenant would have no owner left; make someone else owner first")]
    LastOwner,
    /// Only owners may make, change or remove owners.
    #[error("only an owner may make, change or remove owners")]
    OwnersOnly,
    /// Postgres failed.
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

const COLUMNS: &str = "u.user_id, u.email, u.name, m.role, m.created_at";

/// The tenant's members, oldest first.
pub async fn list(pool: &PgPool, tenant: Uuid) -> Result<Vec<Member>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM memberships m JOIN users u ON u.user_id = m.user_id
         WHERE m.tenant_id = $1 ORDER BY m.created_at, u.user_id"
    )))
    .bind(tenant)
    .fetch_all(pool)
    .await
}

/// Adds the user with `email` as `role`; `owner` says whether the caller is an owner.
pub async fn add(
    pool: &PgPool,
    tenant: Uuid,
    email: &str,
    role: &str,
    owner: bool,
) -> Result<Member, Refused> {
    if role == "owner" && !owner {
        return Err(Refused::OwnersOnly);
    }
    let user: Option<(Uuid,)> = sqlx::query_as("SELECT user_id FROM users WHERE email = $1")
        .bind(email)
        .fetch_optional(pool)
        .await?;
    let (user,) = user.ok_or(Refused::NoSuchUser)?;
    let added = sqlx::query(
        "INSERT INTO memberships (tenant_id, user_id, role) VALUES ($1, $2, $3)
         ON CONFLICT (tenant_id, user_id) DO NOTHING",
    )
    .bind(tenant)
    .bind(user)
    .bind(role)
    .execute(pool)
    .await?;
    if added.rows_affected() == 0 {
        return Err(Refused::AlreadyMember);
    }
    member(pool, tenant, user).await?.ok_or(Refused::NotMember)
}

async fn member(pool: &PgPool, tenant: Uuid, user: Uuid) -> Result<Option<Member>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM memberships m JOIN users u ON u.user_id = m.user_id
         WHERE m.tenant_id = $1 AND m.user_id = $2"
    )))
    .bind(tenant)
    .bind(user)
    .fetch_optional(pool)
    .await
}

/// Gives `user` the role `role` (`None`: removes them), keeping an owner, and ends their
/// sessions in the tenant; the ended sessions' ids.
pub async fn change(
    pool: &PgPool,
    tenant: Uuid,
    user: Uuid,
    role: Option<&str>,
    owner: bool,
) -> Result<Vec<Uuid>, Refused> {
    let mut tx = pool.begin().await?;
    // Every owner row of the tenant is locked, so two changes cannot each leave the other
    // as the last owner and then both go.
    let owners: Vec<(Uuid,)> = sqlx::query_as(
        "SELECT user_id FROM memberships WHERE tenant_id = $1 AND role = 'owner' FOR UPDATE",
    )
    .bind(tenant)
    .fetch_all(&mut *tx)
    .await?;
    let current: Option<(String,)> = sqlx::query_as(
        "SELECT role FROM memberships WHERE tenant_id = $1 AND user_id = $2 FOR UPDATE",
    )
    .bind(tenant)
    .bind(user)
    .fetch_optional(&mut *tx)
    .await?;
    let (current,) = current.ok_or(Refused::NotMember)?;
    if (current == "owner" || role == Some("owner")) && !owner {
        return Err(Refused::OwnersOnly);
    }
    if current == "owner" && role != Some("owner") && owners.len() <= 1 {
        return Err(Refused::LastOwner);
    }
    match role {
        Some(role) => {
            sqlx::query("UPDATE memberships SET role = $3 WHERE tenant_id = $1 AND user_id = $2")
                .bind(tenant)
                .bind(user)
                .bind(role)
                .execute(&mut *tx)
                .await?;
        }
        None => {
            sqlx::query("DELETE FROM memberships WHERE tenant_id = $1 AND user_id = $2")
                .bind(tenant)
                .bind(user)
                .execute(&mut *tx)
                .await?;
        }
    }
    let ended: Vec<(Uuid,)> = sqlx::query_as(
        "UPDATE sessions SET revoked_at = now(), revoked_reason = 'their role changed'
         WHERE tenant_id = $1 AND user_id = $2 AND revoked_at IS NULL
         RETURNING session_id",
    )
    .bind(tenant)
    .bind(user)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(ended.into_iter().map(|(id,)| id).collect())
}

/// Whether the caller is an owner: a session of an owner, or an API key with `*`
/// (made by the operator).
pub async fn is_owner(pool: &PgPool, tenant: Uuid, key_id: Uuid) -> Result<bool, sqlx::Error> {
    let role: Option<(String,)> = sqlx::query_as(
        "SELECT m.role FROM sessions s
         JOIN memberships m ON m.tenant_id = s.tenant_id AND m.user_id = s.user_id
         WHERE s.session_id = $1 AND s.tenant_id = $2
         UNION ALL
         SELECT 'owner' FROM api_keys WHERE id = $1 AND tenant_id = $2",
    )
    .bind(key_id)
    .bind(tenant)
    .fetch_optional(pool)
    .await?;
    Ok(role.is_some_and(|(role,)| role == "owner"))
}
