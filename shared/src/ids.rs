//! Identifiers: newtypes over UUIDs so a tenant id is never passed as a task id.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// A task's id: a UUID v7, time-ordered when freshly made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TaskId(pub Uuid);

/// A tenant's id (any UUID).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TenantId(pub Uuid);

impl TaskId {
    /// A fresh, time-ordered task id.
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }

    /// The task id a client's idempotency key stands for: the same tenant and key give the
    /// same id on every command-api, so a retried start is deduplicated by JetStream.
    /// The bits are SHA-256 of the tenant and the key, marked as version 7.
    pub fn from_idempotency_key(tenant: TenantId, key: &str) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(b"axontask/idempotency/v1\0");
        hasher.update(tenant.0.as_bytes());
        hasher.update(key.as_bytes());
        let digest = hasher.finalize();
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest[..16]);
        Self(
            uuid::Builder::from_bytes(bytes)
                .with_version(uuid::Version::SortRand)
                .with_variant(uuid::Variant::RFC4122)
                .into_uuid(),
        )
    }
}

impl Default for TaskId {
    fn default() -> Self {
        Self::new()
    }
}

macro_rules! uuid_newtype_text {
    ($ty:ident) => {
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.hyphenated().fmt(f)
            }
        }

        impl FromStr for $ty {
            type Err = uuid::Error;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }
    };
}

uuid_newtype_text!(TaskId);
uuid_newtype_text!(TenantId);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_ids_are_v7_and_ordered() {
        let a = TaskId::new();
        let b = TaskId::new();
        assert_eq!(a.0.get_version_num(), 7);
        assert!(a < b);
    }

    #[test]
    fn idempotency_key_gives_a_stable_v7_id_per_tenant() {
        let t1 = TenantId(Uuid::now_v7());
        let t2 = TenantId(Uuid::now_v7());
        let a = TaskId::from_idempotency_key(t1, "deploy-42");
        assert_eq!(a, TaskId::from_idempotency_key(t1, "deploy-42"));
        assert_ne!(a, TaskId::from_idempotency_key(t1, "deploy-43"));
        assert_ne!(a, TaskId::from_idempotency_key(t2, "deploy-42"));
        assert_eq!(a.0.get_version_num(), 7);
        assert_eq!(a.0.get_variant(), uuid::Variant::RFC4122);
    }

    #[test]
    fn text_round_trip() {
        let a = TaskId::new();
        assert_eq!(a.to_string().parse::<TaskId>().ok(), Some(a));
        assert!("not-a-uuid".parse::<TaskId>().is_err());
    }
}
