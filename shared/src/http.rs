//! The HTTP error shape (§3.7) and request extractors that reject bad input with it:
//! `{"error":{"code":"snake_case","message":"what went wrong and how to fix it"}}`.

use std::fmt::Display;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRef, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::json;

use axum::http::HeaderValue;

use crate::auth::{self, Principal, Scope};
use crate::ids::{TaskId, TenantId};
use crate::keys::Keys;
use crate::tokens::TokenError;

/// An error answer: a status, a stable code and a message that says how to fix it.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// Stable snake_case code clients branch on.
    pub code: &'static str,
    /// What went wrong and how to fix it.
    pub message: String,
    /// Seconds to wait before trying again (`Retry-After`), for a limit reached.
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// An error with any status.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// 429: a limit is reached; try again after `retry_after` seconds.
    pub fn too_many(code: &'static str, message: impl Into<String>, retry_after: u64) -> Self {
        Self {
            retry_after: Some(retry_after),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, code, message)
        }
    }

    /// 400: the request is wrong and changes nothing.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 404 for a task that does not exist or belongs to another tenant.
    pub fn task_not_found(task: TaskId) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "task_not_found",
            format!(
                "no task {task} for this API key's tenant; check the id returned by start_task"
            ),
        )
    }

    /// 503: a backing service failed. The cause is logged here, once, and not shown.
    pub fn unavailable(service: &'static str, cause: impl Display) -> Self {
        tracing::error!(service, %cause, "backing service failed");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "service_unavailable",
            format!("{service} is unavailable; retry in a few seconds"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, seconds.into());
        }
        response
    }
}

/// Answers unknown routes with the error body.
pub async fn route_not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "route_not_found",
        "no such route; see the HTTP API in the README",
    )
}

/// Answers a known route called with the wrong method.
pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method; see the HTTP API in the README",
    )
}

/// A JSON body; malformed, mistyped or oversized bodies get the error shape.
#[derive(Debug)]
pub struct Json<T>(pub T);

impl<S, T> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::JsonDataError(e) => ApiError::bad_request(
            "invalid_body",
            format!("{}; check the field names and types", e.body_text()),
        ),
        JsonRejection::JsonSyntaxError(e) => ApiError::bad_request(
            "malformed_json",
            format!("the body is not valid JSON: {}", e.body_text()),
        ),
        JsonRejection::MissingJsonContentType(_) => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as JSON with Content-Type: application/json",
        ),
        JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                "the body is larger than 64 KiB; send smaller arguments",
            )
        }
        other => ApiError::bad_request("unreadable_body", other.body_text()),
    }
}

/// Query parameters; bad ones get the error shape.
#[derive(Debug)]
pub struct Query<T>(pub T);

impl<S, T> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(value)| Self(value))
            .map_err(|e: QueryRejection| ApiError::bad_request("invalid_query", e.body_text()))
    }
}

/// The `{id}` of a task route, parsed as a task id.
#[derive(Debug, Clone, Copy)]
pub struct TaskPath(pub TaskId);

impl<S: Send + Sync> FromRequestParts<S> for TaskPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Path(raw) =
            axum::extract::Path::<String>::from_request_parts(parts, state)
                .await
                .map_err(|e| ApiError::bad_request("invalid_path", e.body_text()))?;
        raw.parse().map(Self).map_err(|_| {
            ApiError::bad_request(
                "invalid_task_id",
                format!("'{raw}' is not a task id; task ids are UUIDs as returned by start_task"),
            )
        })
    }
}

/// The authenticated caller, from `X-Api-Key` or `Authorization: Bearer`.
#[derive(Debug, Clone)]
pub struct Caller(pub Principal);

impl Caller {
    /// The caller's tenant, if the key grants `scope`; 403 otherwise.
    pub fn tenant_for(&self, scope: Scope) -> Result<TenantId, ApiError> {
        if self.0.allows(scope) {
            Ok(self.0.tenant_id)
        } else {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "insufficient_scope",
                format!(
                    "these credentials lack the scope {}; use a key or a role that has it",
                    scope.as_str()
                ),
            ))
        }
    }
}

/// 401 with a message saying how to authenticate.
pub fn unauthorized(code: &'static str, message: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, code, message)
}

impl<S> FromRequestParts<S> for Caller
where
    Keys: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        // Authenticated already by the rate limiter in front of the route.
        if let Some(principal) = parts.extensions.get::<Principal>() {
            return Ok(Self(principal.clone()));
        }
        authenticate(&Keys::from_ref(state), &parts.headers)
            .await
            .map(Self)
    }
}

/// The caller that `headers` name (`Authorization: Bearer` or `X-Api-Key`), or the 401 (503
/// when Postgres cannot be asked) that says how to authenticate.
pub async fn authenticate(keys: &Keys, headers: &HeaderMap) -> Result<Principal, ApiError> {
    if let Some(authorization) = headers.get(axum::http::header::AUTHORIZATION) {
        return bearer(keys, authorization).await;
    }
    let Some(key) = headers.get("x-api-key") else {
        return Err(unauthorized(
            "missing_api_key",
            "send an API key in the X-Api-Key header (create one with `axontask keys create`), \
             or an access token as Authorization: Bearer (from /auth/login)",
        ));
    };
    let invalid = || {
        unauthorized(
            "invalid_api_key",
            "the X-Api-Key is not a valid, unrevoked, unexpired key; create one with `axontask keys create`",
        )
    };
    let key = key.to_str().map_err(|_| invalid())?;
    if !auth::is_well_formed(key) {
        return Err(invalid());
    }
    match keys.lookup(key).await {
        Ok(Some(principal)) => Ok(principal),
        Ok(None) => Err(invalid()),
        Err(e) => Err(ApiError::unavailable("postgres", e)),
    }
}

/// The principal of `Authorization: Bearer <access token>`.
async fn bearer(keys: &Keys, authorization: &HeaderValue) -> Result<Principal, ApiError> {
    let token = authorization
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or_else(|| {
            unauthorized(
                "invalid_authorization",
                "the Authorization header must be `Bearer <access token>` (from /auth/login)",
            )
        })?;
    match keys.lookup_token(token).await {
        Ok(Ok(principal)) => Ok(principal),
        Ok(Err(TokenError::Expired)) => Err(unauthorized(
            "token_expired",
            &TokenError::Expired.to_string(),
        )),
        Ok(Err(e @ TokenError::NotAccess)) => {
            Err(unauthorized("not_an_access_token", &e.to_string()))
        }
        Ok(Err(_)) => Err(unauthorized(
            "invalid_token",
            "the access token is not valid here, or its session ended (logout); log in again",
        )),
        Err(e) => Err(ApiError::unavailable("postgres", e)),
    }
}
