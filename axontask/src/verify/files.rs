//! Files as sources: an NDJSON export of events, a receipt, a head, a JWKS.

use anyhow::Context;
use serde::de::DeserializeOwned;
use shared::audit::signer::{Jwks, PublicKey};
use shared::events::wire::Envelope;

/// Reads a JSON file.
pub fn json<T: DeserializeOwned>(path: &str, what: &str) -> anyhow::Result<T> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {what} {path}"))?;
    serde_json::from_str(&text).with_context(|| format!("{path} is not {what}"))
}

/// Reads an NDJSON export (`GET /mcp/tasks/{id}/events` with `Accept: application/x-ndjson`).
pub fn events(path: &str) -> anyhow::Result<Vec<Envelope>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(n, line)| {
            serde_json::from_str(line)
                .with_context(|| format!("{path} line {}: not an event envelope", n + 1))
        })
        .collect()
}

/// Keys from a JWKS file, or from a URL (`https://…/.well-known/axontask/keys`).
pub async fn keys(source: &str) -> anyhow::Result<Vec<PublicKey>> {
    let jwks: Jwks = if source.starts_with("http://") || source.starts_with("https://") {
        reqwest::get(source)
            .await
            .and_then(reqwest::Response::error_for_status)
            .with_context(|| format!("GET {source}"))?
            .json()
            .await
            .with_context(|| format!("{source} is not a JWKS"))?
    } else {
        json(source, "a JWKS")?
    };
    Ok(jwks.public_keys())
}
