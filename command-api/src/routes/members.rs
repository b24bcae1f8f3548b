//! `GET/POST /api/members`, `PATCH/DELETE /api/members/{user_id}`: a tenant's members.
//! Any member reads the list; owners and admins (and keys with `*`) manage it, and only
//! owners touch owners.

use axum::extract::{Path, State as Extract};
use axum::http::StatusCode;
use serde::Deserialize;
use shared::auth::Scope;
use shared::http::{ApiError, Caller, Json};
use uuid::Uuid;

use crate::State;
use crate::accounts::members::{self, Member, ROLES, Refused};

/// `POST /api/members`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Add {
    email: String,
    role: String,
}

/// `PATCH /api/members/{user_id}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Change {
    role: String,
}

fn refused(e: Refused) -> ApiError {
    let (status, code) = match &e {
        Refused::NoSuchUser => (StatusCode::NOT_FOUND, "user_not_found"),
        Refused::NotMember => (StatusCode::NOT_FOUND, "member_not_found"),
        Refused::AlreadyMember => (StatusCode::CONFLICT, "already_member"),
        Refused::LastOwner => (StatusCode::CONFLICT, "last_owner"),
        Refused::OwnersOnly => (StatusCode::FORBIDDEN, "owners_only"),
        Refused::Db(e) => return ApiError::unavailable("postgres", e),
    };
    ApiError::new(status, code, e.to_string())
}

fn role(text: &str) -> Result<&str, ApiError> {
    ROLES.iter().copied().find(|r| *r == text).ok_or_else(|| {
        ApiError::bad_request(
            "invalid_role",
            format!("the role must be one of {}", ROLES.join(", ")),
        )
    })
}

fn user_id(text: &str) -> Result<Uuid, ApiError> {
    text.parse().map_err(|_| {
        ApiError::bad_request(
            "invalid_user_id",
            "the member's id is a UUID, as GET /api/members lists it",
        )
    })
}

/// Whether the caller may touch owners.
async fn owner(state: &State, caller: &Caller) -> Result<bool, ApiError> {
    members::is_owner(&state.pool, caller.0.tenant_id.0, caller.0.key_id)
        .await
        .map_err(|e| ApiError::unavailable("postgres", e))
}

/// `GET /api/members`.
pub async fn list(
    Extract(state): Extract<State>,
    caller: Caller,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let tenant = caller.tenant_for(Scope::TasksRead)?;
    let members = members::list(&state.pool, tenant.0)
        .await
        .map_err(|e| ApiError::unavailable("postgres", e))?;
    Ok(axum::Json(serde_json::json!({ "members": members })))
}

/// `POST /api/members {email, role}`: adds a registered user.
pub async fn add(
    Extract(state): Extract<State>,
    caller: Caller,
    Json(body): Json<Add>,
) -> Result<(StatusCode, axum::Json<Member>), ApiError> {
    let tenant = caller.tenant_for(Scope::Manage)?;
    let role = role(&body.role)?;
    let email = body.email.trim().to_lowercase();
    let owner = owner(&state, &caller).await?;
    let member = members::add(&state.pool, tenant.0, &email, role, owner)
        .await
        .map_err(refused)?;
    Ok((StatusCode::CREATED, axum::Json(member)))
}

/// `PATCH /api/members/{user_id} {role}`: their sessions here end (their tokens named
/// the old role).
pub async fn change(
    Extract(state): Extract<State>,
    caller: Caller,
    Path(user): Path<String>,
    Json(body): Json<Change>,
) -> Result<StatusCode, ApiError> {
    let tenant = caller.tenant_for(Scope::Manage)?;
    let (user, role) = (user_id(&user)?, role(&body.role)?);
    let owner = owner(&state, &caller).await?;
    let ended = members::change(&state.pool, tenant.0, user, Some(role), owner)
        .await
        .map_err(refused)?;
    for session in ended {
        state.keys.session_ended(session);
    }
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /api/members/{user_id}`: also ends their sessions here.
pub async fn remove(
    Extract(state): Extract<State>,
    caller: Caller,
    Path(user): Path<String>,
) -> Result<StatusCode, ApiError> {
    let tenant = caller.tenant_for(Scope::Manage)?;
    let user = user_id(&user)?;
    let owner = owner(&state, &caller).await?;
    let ended = members::change(&state.pool, tenant.0, user, None, owner)
        .await
        .map_err(refused)?;
    for session in ended {
        state.keys.session_ended(session);
    }
    Ok(StatusCode::NO_CONTENT)
}
