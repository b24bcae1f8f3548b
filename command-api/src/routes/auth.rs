//! `POST /auth/register`, `/auth/login`, `/auth/refresh`, `/auth/logout` (§3.7).

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State as Extract};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use shared::http::{ApiError, Caller, Json, unauthorized};
use shared::tokens::{Subject, TokenError, TokenType, Tokens};
use uuid::Uuid;

use crate::State;
use crate::accounts::store::{self, RegisterError, Rotation};
use crate::accounts::{passwords, throttle};

/// Longest email accepted (RFC 5321's path limit).
const MAX_EMAIL: usize = 254;
/// Longest display name.
const MAX_NAME: usize = 200;

/// `POST /auth/register` (no `Debug`: it holds a password).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Register {
    email: String,
    password: String,
    name: Option<String>,
}

/// `POST /auth/login` (no `Debug`: it holds a password).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Login {
    email: String,
    password: String,
    /// Which of the user's tenants the session acts for (default: their first).
    tenant_id: Option<Uuid>,
}

/// `POST /auth/refresh` (no `Debug`: it holds a token).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Refresh {
    refresh_token: String,
}

/// What register, login and refresh answer (no `Debug`: it holds tokens).
#[derive(Serialize)]
pub struct Signed {
    user_id: Uuid,
    tenant_id: Uuid,
    access_token: String,
    refresh_token: String,
    token_type: &'static str,
    expires_in: u64,
}

fn db(e: sqlx::Error) -> ApiError {
    ApiError::unavailable("postgres", e)
}

fn tokens(state: &State) -> Result<&Tokens, ApiError> {
    state.keys.tokens().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "sign_in_disabled",
            "this server has no JWT_SECRET, so it cannot sign tokens; use an API key",
        )
    })
}

/// A normalized email, or 400.
fn email(text: &str) -> Result<String, ApiError> {
    let email = text.trim().to_lowercase();
    let well_formed = email.len() <= MAX_EMAIL
        && !email.chars().any(char::is_whitespace)
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && domain.contains('.') && !domain.contains('@')
        });
    if well_formed {
        Ok(email)
    } else {
        Err(ApiError::bad_request(
            "invalid_email",
            "the email is not an address like name@example.com (at most 254 characters)",
        ))
    }
}

/// Opens a session for `subject` (whose `session` is new) and signs its first tokens.
async fn open(state: &State, subject: Subject) -> Result<Signed, ApiError> {
    let tokens = tokens(state)?;
    let now = shared::time::unix_now();
    let jti = Uuid::now_v7();
    let (refresh, claims) = tokens.issue(&subject, TokenType::Refresh, jti, now);
    let expires_at =
        chrono::DateTime::from_timestamp(i64::try_from(claims.exp).unwrap_or(i64::MAX), 0)
            .unwrap_or_else(chrono::Utc::now);
    store::open_session(
        &state.pool,
        subject.session,
        subject.user,
        subject.tenant,
        jti,
        expires_at,
    )
    .await
    .map_err(db)?;
    Ok(signed(tokens, &subject, refresh, now))
}

fn signed(tokens: &Tokens, subject: &Subject, refresh: String, now: u64) -> Signed {
    let (access, _) = tokens.issue(subject, TokenType::Access, Uuid::now_v7(), now);
    Signed {
        user_id: subject.user,
        tenant_id: subject.tenant,
        access_token: access,
        refresh_token: refresh,
        token_type: "Bearer",
        expires_in: tokens.access_ttl.as_secs(),
    }
}

/// How long a sign-in waits for a free password hasher before answering 503.
const HASHER_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Runs the password hasher off the async threads, a few at a time (each takes 64 MiB).
async fn blocking<T: Send + 'static>(
    state: &State,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    let busy = || {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "sign_in_busy",
            "this server is checking as many passwords as it can at once; retry in a few seconds",
        )
    };
    let _permit = tokio::time::timeout(HASHER_WAIT, state.hashing.clone().acquire_owned())
        .await
        .map_err(|_| busy())?
        .map_err(|_| busy())?;
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ApiError::unavailable("password hasher", e))
}

/// `POST /auth/register`: a user, their own tenant (as owner), and a session.
pub async fn register(
    Extract(state): Extract<State>,
    Json(body): Json<Register>,
) -> Result<(StatusCode, axum::Json<Signed>), ApiError> {
    tokens(&state)?;
    let email = email(&body.email)?;
    if let Some(why) = passwords::refused(&body.password, &email) {
        return Err(ApiError::bad_request("weak_password", why));
    }
    let name = body
        .name
        .as_deref()
        .map(str::trim)
        .filter(|n| !n.is_empty());
    if name.is_some_and(|n| n.chars().count() > MAX_NAME) {
        return Err(ApiError::bad_request(
            "invalid_name",
            format!("the name is longer than {MAX_NAME} characters"),
        ));
    }
    let hasher = state.hasher;
    let password = body.password;
    let hash = blocking(&state, move || hasher.hash(&password)).await?;
    let registered = match store::register(&state.pool, &email, &hash, name).await {
        Ok(registered) => registered,
        Err(RegisterError::Taken) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "email_taken",
                "an account with this email exists; log in at /auth/login",
            ));
        }
        Err(RegisterError::Db(e)) => return Err(db(e)),
    };
    let subject = Subject {
        user: registered.user,
        tenant: registered.tenant,
        role: "owner".into(),
        session: Uuid::now_v7(),
    };
    Ok((
        StatusCode::CREATED,
        axum::Json(open(&state, subject).await?),
    ))
}

/// `POST /auth/login`. A wrong password and an unknown email take as long and answer
/// alike; repeated failures for one email or from one address must wait.
pub async fn login(
    Extract(state): Extract<State>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Json(body): Json<Login>,
) -> Result<axum::Json<Signed>, ApiError> {
    tokens(&state)?;
    let email = email(&body.email)?;
    if body.password.len() > passwords::MAX_BYTES {
        return Err(ApiError::bad_request(
            "invalid_password",
            "the password is longer than any account's",
        ));
    }
    let keys = [format!("email:{email}"), throttle::address_key(peer.ip())];
    if let Err(wait) = state.throttle.attempt(&keys) {
        let seconds = wait.as_secs().max(1);
        return Err(ApiError::too_many(
            "too_many_failed_logins",
            format!(
                "too many failed logins for this email or from this address; try again in {seconds} s"
            ),
            seconds,
        ));
    }
    let account = store::account(&state.pool, &email, body.tenant_id)
        .await
        .map_err(db)?;
    let hasher = state.hasher;
    let (hash, decoy) = match &account {
        Some(account) => (account.password_hash.clone(), None),
        None => (String::new(), Some(state.decoy.clone())),
    };
    let password = body.password;
    let matches = blocking(&state, move || match decoy {
        Some(decoy) => {
            hasher.verify(&password, &decoy);
            false
        }
        None => hasher.verify(&password, &hash),
    })
    .await?;
    let Some(account) = account.filter(|_| matches) else {
        return Err(unauthorized(
            "invalid_credentials",
            "the email or password is wrong (or the account is not a member of that tenant)",
        ));
    };
    state.throttle.succeeded(&keys);
    let subject = Subject {
        user: account.user_id,
        tenant: account.tenant_id,
        role: account.role,
        session: Uuid::now_v7(),
    };
    Ok(axum::Json(open(&state, subject).await?))
}

/// `POST /auth/refresh`: new tokens for a current refresh token, which is retired; a
/// retired one ends its whole session.
pub async fn refresh(
    Extract(state): Extract<State>,
    Json(body): Json<Refresh>,
) -> Result<axum::Json<Signed>, ApiError> {
    let tokens = tokens(&state)?;
    let claims = tokens
        .verify(&body.refresh_token, TokenType::Refresh)
        .map_err(|e| match e {
            TokenError::Expired => unauthorized(
                "token_expired",
                "the refresh token has expired; log in again",
            ),
            e @ TokenError::NotRefresh => unauthorized("not_a_refresh_token", &e.to_string()),
            _ => unauthorized(
                "invalid_token",
                "the refresh token is not valid here; log in again",
            ),
        })?;
    let next = Uuid::now_v7();
    match store::rotate(&state.pool, claims.sid, claims.jti, next)
        .await
        .map_err(db)?
    {
        Rotation::Rotated { role } => {
            let subject = Subject {
                user: claims.sub,
                tenant: claims.tenant_id,
                role,
                session: claims.sid,
            };
            let now = shared::time::unix_now();
            let (refresh, _) = tokens.issue(&subject, TokenType::Refresh, next, now);
            Ok(axum::Json(signed(tokens, &subject, refresh, now)))
        }
        Rotation::Reused => {
            state.keys.session_ended(claims.sid);
            Err(unauthorized(
                "refresh_token_reused",
                "this refresh token was already used; its session is ended for safety (log in again)",
            ))
        }
        Rotation::Ended => Err(unauthorized(
            "session_ended",
            "the session has ended; log in again",
        )),
    }
}

/// `POST /auth/logout` with the session's access token: ends the session (its tokens stop
/// working on every process).
pub async fn logout(
    Extract(state): Extract<State>,
    caller: Caller,
) -> Result<StatusCode, ApiError> {
    let session = caller.0.key_id;
    if !store::revoke(&state.pool, session, "logout")
        .await
        .map_err(db)?
    {
        return Err(ApiError::bad_request(
            "not_a_session",
            "logout ends a sign-in session: send its access token as Authorization: Bearer \
             (an API key is revoked with DELETE /api/keys/{id})",
        ));
    }
    state.keys.session_ended(session);
    Ok(StatusCode::NO_CONTENT)
}
