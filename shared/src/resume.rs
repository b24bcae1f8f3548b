//! Resume tokens: a capability for one task's stream, so a browser `EventSource` (which
//! cannot send headers) can resume. A token names the API key that minted it (not the
//! tenant: the server finds that from the key, so a revoked key's tokens stop working) and
//! when it expires, under an HMAC of the server's secret:
//! `base64url(0x02 || expires_unix (8 bytes, big-endian) || key_id (16) || HMAC-SHA256(secret,
//! label || expires || key_id || task_id))`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use uuid::Uuid;

use crate::ids::TaskId;

/// The token format's version byte.
const VERSION: u8 = 2;
/// Version, expiry, key id, MAC.
const LEN: usize = 1 + 8 + 16 + 32;

/// Why a token opens nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// Not a token of this server for this task.
    #[error("the resume_token is not valid for this task; use the one start_task returned")]
    Invalid,
    /// It was, but its time is over.
    #[error("the resume_token expired; resume with the API key (Last-Event-ID or since_seq)")]
    Expired,
}

fn mac(secret: &str, expires: u64, key: Uuid, task: TaskId) -> Hmac<Sha256> {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC accepts keys of any length");
    mac.update(b"axontask/resume/v2\0");
    mac.update(&expires.to_be_bytes());
    mac.update(key.as_bytes());
    mac.update(task.0.as_bytes());
    mac
}

/// The token for `task`, minted with API key `key`, valid until `expires` (Unix seconds).
pub fn issue(secret: &str, key: Uuid, task: TaskId, expires: u64) -> String {
    let mut bytes = Vec::with_capacity(LEN);
    bytes.push(VERSION);
    bytes.extend_from_slice(&expires.to_be_bytes());
    bytes.extend_from_slice(key.as_bytes());
    bytes.extend_from_slice(&mac(secret, expires, key, task).finalize().into_bytes());
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The API key a token for `task` was minted with, if it is valid at `now` (Unix seconds);
/// the caller still checks that the key is live.
pub fn verify(secret: &str, token: &str, task: TaskId, now: u64) -> Result<Uuid, Refused> {
    let bytes = URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| Refused::Invalid)?;
    if bytes.len() != LEN || bytes[0] != VERSION {
        return Err(Refused::Invalid);
    }
    let expires = u64::from_be_bytes(bytes[1..9].try_into().map_err(|_| Refused::Invalid)?);
    let key = Uuid::from_slice(&bytes[9..25]).map_err(|_| Refused::Invalid)?;
    mac(secret, expires, key, task)
        .verify_slice(&bytes[25..])
        .map_err(|_| Refused::Invalid)?;
    if now >= expires {
        return Err(Refused::Expired);
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn a_token_opens_only_its_task_until_it_expires() {
        let key = Uuid::now_v7();
        let task = TaskId::new();
        let token = issue(SECRET, key, task, 1_000);
        assert_eq!(verify(SECRET, &token, task, 999), Ok(key));
        assert_eq!(verify(SECRET, &token, task, 1_000), Err(Refused::Expired));
        assert_eq!(
            verify(SECRET, &token, TaskId::new(), 999),
            Err(Refused::Invalid)
        );
        assert_eq!(
            verify("another secret, also 32 chars long!", &token, task, 999),
            Err(Refused::Invalid)
        );
        assert_eq!(verify(SECRET, "garbage", task, 999), Err(Refused::Invalid));
    }

    #[test]
    fn a_longer_life_cannot_be_forged() {
        let key = Uuid::now_v7();
        let task = TaskId::new();
        let mut bytes = URL_SAFE_NO_PAD
            .decode(issue(SECRET, key, task, 1_000))
            .expect("base64url");
        bytes[1..9].copy_from_slice(&u64::MAX.to_be_bytes());
        let forged = URL_SAFE_NO_PAD.encode(bytes);
        assert_eq!(verify(SECRET, &forged, task, 2_000), Err(Refused::Invalid));
    }
}
