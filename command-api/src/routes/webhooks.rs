//! `GET/POST /api/webhooks`, `DELETE /api/webhooks/{id}`, `POST /api/webhooks/{id}/test`
//! (§3.7): the tenant's webhooks. The secret is shown once, at creation; a URL must be
//! `https` to a public host (checked here, and again at every delivery).

use axum::extract::{Path, State as Extract};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use rand::distr::{Alphanumeric, SampleString};
use serde::{Deserialize, Serialize};
use serde_json::json;
use shared::auth::Scope;
use shared::events::EventKind;
use shared::http::{ApiError, Caller, Json};
use uuid::Uuid;
use webhooks::store::{self, Webhook};
use webhooks::target;

use crate::State;

/// Kinds delivered when a webhook names none: the terminal ones.
const TERMINAL: [&str; 4] = ["succeeded", "failed", "canceled", "timeout"];

/// `POST /api/webhooks` (no `Debug`: its URL may carry the receiver's tokens).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Create {
    url: String,
    events: Option<Vec<String>>,
}

/// A new webhook, with its secret (shown only here; no `Debug`).
#[derive(Serialize)]
pub struct Created {
    id: Uuid,
    url: String,
    events: Vec<String>,
    secret: String,
    created_at: DateTime<Utc>,
}

/// The answer of a test delivery.
#[derive(Debug, Serialize)]
pub struct Tested {
    delivered: bool,
    status_code: Option<u16>,
    error: Option<String>,
}

fn db(e: sqlx::Error) -> ApiError {
    ApiError::unavailable("postgres", e)
}

fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "webhook_not_found",
        "no such webhook in this tenant; GET /api/webhooks lists them",
    )
}

/// The event kinds asked for: known ones, no repeats; the terminal ones by default.
fn event_kinds(asked: Option<Vec<String>>) -> Result<Vec<String>, ApiError> {
    let Some(asked) = asked else {
        return Ok(TERMINAL.map(str::to_owned).to_vec());
    };
    let known = |kind: &str| serde_json::from_value::<EventKind>(json!(kind)).is_ok();
    let mut kinds: Vec<String> = Vec::new();
    for kind in asked {
        if !known(&kind) {
            return Err(ApiError::bad_request(
                "invalid_events",
                format!(
                    "events must be event kinds: requested, started, progress, stdout, stderr, cancel_requested, {} (got {:.40?})",
                    TERMINAL.join(", "),
                    kind
                ),
            ));
        }
        if !kinds.contains(&kind) {
            kinds.push(kind);
        }
    }
    if kinds.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_events",
            "events must name at least one kind, or be left out for the terminal ones",
        ));
    }
    Ok(kinds)
}

/// `POST /api/webhooks {url, events?}`: 201 with the secret that signs deliveries.
pub async fn create(
    Extract(state): Extract<State>,
    caller: Caller,
    Json(body): Json<Create>,
) -> Result<(StatusCode, axum::Json<Created>), ApiError> {
    let tenant = caller.tenant_for(Scope::Webhooks)?;
    let allow_private = state.settings.webhooks.allow_private;
    let url = target::check_url(&body.url, allow_private)
        .map_err(|reason| ApiError::bad_request("invalid_url", reason))?;
    let events = event_kinds(body.events)?;
    if let Some(url::Host::Domain(host)) = url.host() {
        let port = url.port_or_known_default().unwrap_or(443);
        target::resolve(host, port, allow_private)
            .await
            .map_err(|reason| ApiError::bad_request("invalid_url", reason))?;
    }
    let secret = format!("whsec_{}", Alphanumeric.sample_string(&mut rand::rng(), 32));
    let made = store::create(&state.pool, tenant.0, url.as_str(), &events, &secret)
        .await
        .map_err(db)?;
    let Some(webhook) = made else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "webhook_limit",
            format!(
                "this tenant has {} webhooks, the most it may have; delete one first",
                store::MAX_PER_TENANT
            ),
        ));
    };
    Ok((
        StatusCode::CREATED,
        axum::Json(Created {
            id: webhook.id,
            url: webhook.url,
            events: webhook.events,
            secret,
            created_at: webhook.created_at,
        }),
    ))
}

/// `GET /api/webhooks`: `{webhooks: […]}`, never their secrets.
pub async fn list(
    Extract(state): Extract<State>,
    caller: Caller,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let tenant = caller.tenant_for(Scope::Webhooks)?;
    let webhooks: Vec<Webhook> = store::list(&state.pool, tenant.0).await.map_err(db)?;
    Ok(axum::Json(json!({ "webhooks": webhooks })))
}

/// `DELETE /api/webhooks/{id}`: 204; its pending deliveries end.
pub async fn delete(
    Extract(state): Extract<State>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let tenant = caller.tenant_for(Scope::Webhooks)?;
    let id: Uuid = id.parse().map_err(|_| not_found())?;
    if store::delete(&state.pool, tenant.0, id).await.map_err(db)? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(not_found())
    }
}

/// `POST /api/webhooks/{id}/test`: sends a signed test event now and says what the
/// receiver answered.
pub async fn test(
    Extract(state): Extract<State>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<Tested>, ApiError> {
    let tenant = caller.tenant_for(Scope::Webhooks)?;
    let id: Uuid = id.parse().map_err(|_| not_found())?;
    let (url, secret) = store::target(&state.pool, tenant.0, id)
        .await
        .map_err(db)?
        .ok_or_else(not_found)?;
    let event = json!({
        "kind": "test",
        "tenant_id": tenant,
        "ts": shared::time::now_ts(),
        "payload": {"message": "a test delivery from AxonTask"},
    });
    let body = webhooks::deliver::body(id, &event);
    let sent = state
        .webhook_sender
        .post(&url, &secret, Uuid::now_v7(), body)
        .await;
    let tested = match sent {
        Ok(code) => Tested {
            delivered: (200..300).contains(&code),
            status_code: Some(code),
            error: (!(200..300).contains(&code)).then(|| format!("the receiver answered {code}")),
        },
        Err(reason) => Tested {
            delivered: false,
            status_code: None,
            error: Some(reason),
        },
    };
    Ok(axum::Json(tested))
}
