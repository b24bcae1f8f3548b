//! What every HTTP response carries: security headers (no sniffing, no framing, no
//! referrer, no caching unless a route says otherwise), and CORS for the browser origins
//! in `CORS_ALLOWED_ORIGINS`.

use axum::Router;
use axum::http::{HeaderName, HeaderValue, Method, header};
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::set_header::SetResponseHeaderLayer;

/// Request headers a browser may send cross-origin.
const ALLOWED_HEADERS: [&str; 6] = [
    "authorization",
    "content-type",
    "x-api-key",
    "last-event-id",
    "mcp-session-id",
    "mcp-protocol-version",
];
/// Response headers a browser script may read.
const EXPOSED_HEADERS: [&str; 5] = [
    "mcp-session-id",
    "retry-after",
    "ratelimit-limit",
    "ratelimit-remaining",
    "ratelimit-reset",
];

/// `app` with the security headers (each only where the route did not set it) and, if
/// `origins` names any, CORS for them.
pub fn wrap(app: Router, origins: &[HeaderValue]) -> Router {
    let fixed = [
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; frame-ancestors 'none'",
        ),
        (header::CACHE_CONTROL, "no-store"),
    ];
    let mut app = app;
    for (name, value) in fixed {
        app = app.layer(SetResponseHeaderLayer::if_not_present(
            name,
            HeaderValue::from_static(value),
        ));
    }
    if origins.is_empty() {
        return app;
    }
    let names = |list: &[&'static str]| -> Vec<HeaderName> {
        list.iter().map(|h| HeaderName::from_static(h)).collect()
    };
    app.layer(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins.iter().cloned()))
            .allow_methods([Method::GET, Method::POST, Method::PATCH, Method::DELETE])
            .allow_headers(names(&ALLOWED_HEADERS))
            .expose_headers(names(&EXPOSED_HEADERS))
            .max_age(std::time::Duration::from_secs(600)),
    )
}
