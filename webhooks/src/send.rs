//! Posting a delivery (§3.7): `POST` of `{"webhook_id", "event"}` with
//! `X-Axon-Timestamp: <unix seconds>` and
//! `X-Axon-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`. No
//! redirects are followed and no proxy is used; hosts resolve through
//! [`crate::target::PublicOnly`].

use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::target;

/// The signature header's value for `body` sent at `timestamp`.
pub fn signature(secret: &str, timestamp: u64, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC accepts keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Sends deliveries.
#[derive(Clone)]
pub struct Sender {
    client: reqwest::Client,
    allow_private: bool,
}

impl Sender {
    /// A sender whose requests give up after `timeout`; `allow_private` is
    /// `WEBHOOK_ALLOW_PRIVATE`.
    pub fn new(allow_private: bool, timeout: Duration) -> Result<Self, String> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(Arc::new(target::PublicOnly { allow_private }))
            .user_agent("AxonTask-Webhooks/1")
            .build()
            .map_err(|e| format!("cannot build the webhook HTTP client: {e}"))?;
        Ok(Self {
            client,
            allow_private,
        })
    }

    /// Posts `body`, signed with `secret`, to `url`, naming the delivery in
    /// `X-Axon-Delivery` (the same on every attempt, for receivers to drop repeats): the
    /// HTTP status of the answer, or why there was none (never naming the URL, which may
    /// carry the receiver's own tokens).
    pub async fn post(
        &self,
        url: &str,
        secret: &str,
        delivery: uuid::Uuid,
        body: Vec<u8>,
    ) -> Result<u16, String> {
        let url = target::check_url(url, self.allow_private)?;
        let timestamp = shared::time::unix_now();
        let answer = self
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("X-Axon-Delivery", delivery.to_string())
            .header("X-Axon-Timestamp", timestamp)
            .header("X-Axon-Signature", signature(secret, timestamp, &body))
            .body(body)
            .send()
            .await
            .map_err(|e| reason(&e.without_url()))?;
        Ok(answer.status().as_u16())
    }
}

/// A request error with its causes (the resolver's refusal is one), without the URL.
fn reason(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text = format!("{text}: {cause}");
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_of_timestamp_dot_body() {
        // HMAC-SHA256("secret", "1700000000.{}"), computed independently with Python's hmac.
        assert_eq!(
            signature("secret", 1_700_000_000, b"{}"),
            "sha256=b8569b78799ff9e3cbff0fc2d63a33a2b57f3282abd07c37ae5e8e7d79a5f163"
        );
    }
}
