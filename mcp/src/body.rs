//! JSON-RPC bodies checked before rmcp sees them: a body that is not JSON gets the
//! JSON-RPC parse error, a batch (removed from MCP in 2025-06-18) an invalid-request error,
//! both with HTTP 400, so every client gets a JSON-RPC answer that says what to fix.

use axum::body::{Body, to_bytes};
use axum::extract::Request;
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// JSON-RPC's parse error.
const PARSE_ERROR: i64 = -32700;
/// JSON-RPC's invalid request.
const INVALID_REQUEST: i64 = -32600;

/// Rejects POST bodies that are not one JSON-RPC message.
pub async fn single_message(request: Request, next: Next) -> Response {
    if request.method() != Method::POST {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let Ok(bytes) = to_bytes(body, command_api::MAX_BODY_BYTES).await else {
        return (
            StatusCode::PAYLOAD_TOO_LARGE,
            error(
                INVALID_REQUEST,
                "the body is larger than 64 KiB; send smaller arguments",
            ),
        )
            .into_response();
    };
    match serde_json::from_slice::<Value>(&bytes) {
        Err(e) => (
            StatusCode::BAD_REQUEST,
            error(PARSE_ERROR, &format!("the body is not valid JSON: {e}")),
        )
            .into_response(),
        Ok(Value::Array(_)) => (
            StatusCode::BAD_REQUEST,
            error(
                INVALID_REQUEST,
                "JSON-RPC batches are not supported by MCP; send one message per request",
            ),
        )
            .into_response(),
        Ok(_) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
    }
}

fn error(code: i64, message: &str) -> ([(header::HeaderName, &'static str); 1], String) {
    let body = json!({"jsonrpc": "2.0", "id": null, "error": {"code": code, "message": message}});
    (
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
}
