//! `GET/POST /api/keys`, `DELETE /api/keys/{id}` (§3.7): the tenant's API keys. The
//! plaintext key is shown once, at creation; a key never gets a scope its maker lacks;
//! a revoked key stops working at once on every process.

use axum::extract::{Path, State as Extract};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shared::auth::{self, Scope};
use shared::http::{ApiError, Caller, Json};
use uuid::Uuid;

use crate::State;

/// Longest key name.
const MAX_NAME: usize = 100;

/// `POST /api/keys`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Create {
    name: String,
    scopes: Vec<String>,
    expires_at: Option<DateTime<Utc>>,
}

/// A key as listed (never its plaintext or hash).
#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct KeyInfo {
    id: Uuid,
    name: String,
    scopes: Vec<String>,
    created_at: DateTime<Utc>,
    expires_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
    last_used_at: Option<DateTime<Utc>>,
}

/// A new key, with its plaintext (shown only here; no `Debug`).
#[derive(Serialize)]
pub struct Created {
    id: Uuid,
    key: String,
    name: String,
    scopes: Vec<String>,
    created_at: DateTime<Utc>,
    expires_at: Option<DateTime<Utc>>,
}

fn db(e: sqlx::Error) -> ApiError {
    ApiError::unavailable("postgres", e)
}

/// `POST /api/keys {name, scopes, expires_at?}`: 201 with the plaintext key.
pub async fn create(
    Extract(state): Extract<State>,
    caller: Caller,
    Json(body): Json<Create>,
) -> Result<(StatusCode, axum::Json<Created>), ApiError> {
    let tenant = caller.tenant_for(Scope::Keys)?;
    let name = body.name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME {
        return Err(ApiError::bad_request(
            "invalid_name",
            format!("a key needs a name of 1 to {MAX_NAME} characters"),
        ));
    }
    if body.scopes.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_scopes",
            format!("name at least one scope: {}", auth::SCOPES.join(", ")),
        ));
    }
    if let Some(bad) = body
        .scopes
        .iter()
        .find(|s| !auth::SCOPES.contains(&s.as_str()))
    {
        return Err(ApiError::bad_request(
            "invalid_scopes",
            format!(
                "unknown scope '{}'; scopes are {}",
                bad.chars().take(40).collect::<String>(),
                auth::SCOPES.join(", ")
            ),
        ));
    }
    if let Some(more) = body
        .scopes
        .iter()
        .find(|s| !auth::covers(&caller.0.scopes, s))
    {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "scope_escalation",
            format!("a key cannot get the scope {more}, which these credentials do not have"),
        ));
    }
    if body.expires_at.is_some_and(|at| at <= Utc::now()) {
        return Err(ApiError::bad_request(
            "invalid_expiry",
            "expires_at is in the past; give a future RFC 3339 time, or none for a key that does not expire",
        ));
    }
    let mut scopes = body.scopes;
    scopes.dedup();
    let key = auth::generate_key();
    let id = Uuid::now_v7();
    let (created_at,): (DateTime<Utc>,) = sqlx::query_as(
        "INSERT INTO api_keys (id, tenant_id, name, key_hash, scopes, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING created_at",
    )
    .bind(id)
    .bind(tenant.0)
    .bind(name)
    .bind(auth::hash_key(&key))
    .bind(&scopes)
    .bind(body.expires_at)
    .fetch_one(&state.pool)
    .await
    .map_err(db)?;
    let created = Created {
        id,
        key,
        name: name.to_owned(),
        scopes,
        created_at,
        expires_at: body.expires_at,
    };
    Ok((StatusCode::CREATED, axum::Json(created)))
}

/// `GET /api/keys`: the tenant's keys, newest first.
pub async fn list(
    Extract(state): Extract<State>,
    caller: Caller,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let tenant = caller.tenant_for(Scope::Keys)?;
    let keys: Vec<KeyInfo> = sqlx::query_as(
        "SELECT id, name, scopes, created_at, expires_at, revoked_at, last_used_at
         FROM api_keys WHERE tenant_id = $1 ORDER BY created_at DESC, id DESC",
    )
    .bind(tenant.0)
    .fetch_all(&state.pool)
    .await
    .map_err(db)?;
    Ok(axum::Json(serde_json::json!({ "keys": keys })))
}

/// `DELETE /api/keys/{id}`: revokes the key, at once on every process (204, also when it
/// was revoked already).
pub async fn revoke(
    Extract(state): Extract<State>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let tenant = caller.tenant_for(Scope::Keys)?;
    let not_found = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "key_not_found",
            "no such key in this tenant; GET /api/keys lists them",
        )
    };
    let id: Uuid = id.parse().map_err(|_| not_found())?;
    let found: Option<(bool,)> = sqlx::query_as(
        "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, now())
         WHERE id = $1 AND tenant_id = $2 RETURNING true",
    )
    .bind(id)
    .bind(tenant.0)
    .fetch_optional(&state.pool)
    .await
    .map_err(db)?;
    if found.is_none() {
        return Err(not_found());
    }
    state.keys.key_revoked(id);
    Ok(StatusCode::NO_CONTENT)
}
