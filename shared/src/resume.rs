//! Resume tokens: a capability for one task's stream, so a browser `EventSource` (which
//! cannot send headers) can resume. `base64url(tenant_id || HMAC-SHA256(secret, tenant || task))`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use uuid::Uuid;

use crate::ids::{TaskId, TenantId};

fn mac(secret: &str, tenant: TenantId, task: TaskId) -> Hmac<Sha256> {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC accepts keys of any length");
    mac.update(b"axontask/resume/v1\0");
    mac.update(tenant.0.as_bytes());
    mac.update(task.0.as_bytes());
    mac
}

/// The token for `task` of `tenant`.
pub fn issue(secret: &str, tenant: TenantId, task: TaskId) -> String {
    let mut bytes = tenant.0.as_bytes().to_vec();
    bytes.extend_from_slice(&mac(secret, tenant, task).finalize().into_bytes());
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The tenant a token grants `task`'s stream to, or `None` if the token is not valid for it.
pub fn verify(secret: &str, token: &str, task: TaskId) -> Option<TenantId> {
    let bytes = URL_SAFE_NO_PAD.decode(token).ok()?;
    if bytes.len() != 48 {
        return None;
    }
    let tenant = TenantId(Uuid::from_slice(&bytes[..16]).ok()?);
    mac(secret, tenant, task).verify_slice(&bytes[16..]).ok()?;
    Some(tenant)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn a_token_opens_only_its_task() {
        let tenant = TenantId(Uuid::now_v7());
        let task = TaskId::new();
        let token = issue(SECRET, tenant, task);
        assert_eq!(verify(SECRET, &token, task), Some(tenant));
        assert_eq!(verify(SECRET, &token, TaskId::new()), None);
        assert_eq!(
            verify("another secret, also 32 chars long!", &token, task),
            None
        );
        assert_eq!(verify(SECRET, "garbage", task), None);
    }
}
