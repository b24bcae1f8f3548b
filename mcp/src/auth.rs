//! Authentication in front of every MCP request: the same `X-Api-Key` as the HTTP API,
//! checked before any MCP handling (a missing or bad key is HTTP 401). The caller's
//! [`Principal`] rides into the handlers inside the request's `Parts`. A session belongs to
//! the tenant that opened it: another tenant's key naming it gets 404, as for a task.

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rmcp::RoleServer;
use rmcp::model::ErrorData as McpError;
use rmcp::service::RequestContext;
use shared::auth::{Principal, Scope};
use shared::http::{ApiError, Caller};
use shared::ids::TenantId;

use crate::Backend;
use crate::store;

/// The header naming a 2025-11-25 session.
const SESSION_HEADER: &str = "mcp-session-id";

/// Authenticates the request, keeps sessions within their tenant, and binds a session the
/// response opens to the caller's tenant.
pub async fn require_key(State(backend): State<Backend>, request: Request, next: Next) -> Response {
    let (mut parts, body) = request.into_parts();
    let caller = match Caller::from_request_parts(&mut parts, &backend.keys).await {
        Ok(caller) => caller,
        Err(error) => return error.into_response(),
    };
    let tenant = caller.0.tenant_id;
    let named = parts
        .headers
        .get(SESSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if let Some(session) = &named {
        // A session is bound before its id is ever sent to a client: one without a
        // tenant is unknown (or expired), whoever names it.
        match store::session_tenant(&backend.redis, session).await {
            Ok(Some(owner)) if owner == tenant => {}
            Ok(_) => return session_not_found(),
            Err(e) => return ApiError::unavailable("redis", e).into_response(),
        }
    }
    parts.extensions.insert(caller.0);
    let closing = parts.method == Method::DELETE;
    let mut response = next.run(Request::from_parts(parts, body)).await;
    if closing && response.status() == StatusCode::ACCEPTED {
        // A closed session has nothing more to say; clients expect 200 or 204 here.
        *response.status_mut() = StatusCode::NO_CONTENT;
    }
    let opened = response
        .headers()
        .get(SESSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|_| named.is_none());
    if let Some(session) = opened
        && let Err(e) = store::bind_session(&backend.redis, session, tenant).await
    {
        // An unbound session could be named by another tenant: refuse it instead.
        return ApiError::unavailable("redis", e).into_response();
    }
    response
}

fn session_not_found() -> Response {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "session_not_found",
        "no such MCP session for this API key's tenant; send initialize to open one",
    )
    .into_response()
}

/// The authenticated caller of a request (put there by [`require_key`]).
pub fn principal(context: &RequestContext<RoleServer>) -> Result<&Principal, McpError> {
    context
        .extensions
        .get::<Parts>()
        .and_then(|parts| parts.extensions.get::<Principal>())
        .ok_or_else(|| {
            McpError::internal_error("the request carries no authenticated caller", None)
        })
}

/// The caller's tenant if its key grants `scope`, else the §3.7 error to show the model.
pub fn tenant_for(principal: &Principal, scope: Scope) -> Result<TenantId, ApiError> {
    Caller(principal.clone()).tenant_for(scope)
}
