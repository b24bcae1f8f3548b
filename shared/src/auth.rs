//! API keys (`X-Api-Key: axon_<32 base62>`): made here, stored only as SHA-256 hashes, and
//! resolved to the tenant and scopes they grant.

use rand::Rng;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

use crate::ids::TenantId;

const PREFIX: &str = "axon_";
const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// What a request may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Read tasks, their events and streams.
    TasksRead,
    /// Start and cancel tasks.
    TasksWrite,
    /// Manage the tenant: its members (owners and admins, and keys with `*`).
    Manage,
    /// Create, list and revoke API keys.
    Keys,
    /// Create, list, test and delete webhooks.
    Webhooks,
}

impl Scope {
    /// The granted scope names that allow this scope.
    fn granted_by(self) -> &'static [&'static str] {
        match self {
            Self::TasksRead => &["tasks:read", "tasks:*", "*"],
            Self::TasksWrite => &["tasks:write", "tasks:*", "*"],
            Self::Manage => &["*"],
            Self::Keys => &["keys:*", "*"],
            Self::Webhooks => &["webhooks:*", "*"],
        }
    }

    /// The scope's own name, for error messages.
    pub fn as_str(self) -> &'static str {
        self.granted_by()[0]
    }
}

/// Scope names a key may be created with.
pub const SCOPES: [&str; 6] = [
    "tasks:read",
    "tasks:write",
    "tasks:*",
    "keys:*",
    "webhooks:*",
    "*",
];

/// Whether credentials with `granted` scopes may hand out `scope` (to a new key): no key
/// gets more than its maker has.
pub fn covers(granted: &[String], scope: &str) -> bool {
    granted.iter().any(|g| {
        g == "*" || g == scope || (g == "tasks:*" && matches!(scope, "tasks:read" | "tasks:write"))
    })
}

/// Who is calling: resolved from a valid key.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The tenant the key belongs to; every query is filtered by it.
    pub tenant_id: TenantId,
    /// The key's id (resume tokens name it).
    pub key_id: Uuid,
    /// The scopes the key grants.
    pub scopes: Vec<String>,
}

impl Principal {
    /// Whether the key grants `scope`.
    pub fn allows(&self, scope: Scope) -> bool {
        self.scopes
            .iter()
            .any(|granted| scope.granted_by().contains(&granted.as_str()))
    }
}

/// Makes a new plaintext key.
pub fn generate_key() -> String {
    let mut rng = rand::rng();
    let body: String = (0..32)
        .map(|_| BASE62[rng.random_range(0..BASE62.len())] as char)
        .collect();
    format!("{PREFIX}{body}")
}

/// Whether `text` has the shape of a key (so malformed keys are rejected without a query).
pub fn is_well_formed(text: &str) -> bool {
    text.strip_prefix(PREFIX)
        .is_some_and(|body| body.len() == 32 && body.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// The stored form of a key: lowercase hex SHA-256.
pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// Resolves a plaintext key to its principal: `None` if unknown, revoked or expired.
pub async fn lookup(pool: &PgPool, key: &str) -> Result<Option<Principal>, sqlx::Error> {
    let row: Option<(Uuid, Uuid, Vec<String>)> = sqlx::query_as(
        "SELECT id, tenant_id, scopes FROM api_keys
         WHERE key_hash = $1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())",
    )
    .bind(hash_key(key))
    .fetch_optional(pool)
    .await?;
    Ok(row.map(principal))
}

/// `id, tenant_id, scopes` of a key, or `id, tenant_id, role` of a session.
type CredentialRow = (Uuid, Uuid, Option<Vec<String>>, Option<String>);

/// The principal of the key, or the sign-in session, with id `key_id` (a principal's
/// `key_id`): `None` if unknown, revoked or expired.
pub async fn lookup_by_id(pool: &PgPool, key_id: Uuid) -> Result<Option<Principal>, sqlx::Error> {
    let row: Option<CredentialRow> = sqlx::query_as(
        "SELECT id, tenant_id, scopes, NULL::text AS role FROM api_keys
         WHERE id = $1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())
         UNION ALL
         SELECT s.session_id, s.tenant_id, NULL::text[], m.role
         FROM sessions s JOIN memberships m ON m.tenant_id = s.tenant_id AND m.user_id = s.user_id
         WHERE s.session_id = $1 AND s.revoked_at IS NULL AND s.expires_at > now()",
    )
    .bind(key_id)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|(id, tenant, scopes, role)| {
        let scopes = scopes.unwrap_or_else(|| role_scopes(role.as_deref().unwrap_or_default()));
        principal((id, tenant, scopes))
    }))
}

/// The scopes a member's role grants: owners and admins everything, members tasks, viewers
/// reading.
pub fn role_scopes(role: &str) -> Vec<String> {
    let scopes: &[&str] = match role {
        "owner" | "admin" => &["*"],
        "member" => &["tasks:*"],
        "viewer" => &["tasks:read"],
        _ => &[],
    };
    scopes.iter().map(|s| (*s).to_owned()).collect()
}

fn principal((key_id, tenant, scopes): (Uuid, Uuid, Vec<String>)) -> Principal {
    Principal {
        tenant_id: TenantId(tenant),
        key_id,
        scopes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_well_formed_and_distinct() {
        let a = generate_key();
        assert!(is_well_formed(&a), "{a}");
        assert_ne!(a, generate_key());
        assert!(!is_well_formed("axon_short"));
        assert!(!is_well_formed(&a.replace("axon_", "nope_")));
        assert_eq!(hash_key(&a).len(), 64);
    }

    #[test]
    fn scopes() {
        let reader = Principal {
            tenant_id: TenantId(Uuid::nil()),
            key_id: Uuid::nil(),
            scopes: vec!["tasks:read".into()],
        };
        assert!(reader.allows(Scope::TasksRead));
        assert!(!reader.allows(Scope::TasksWrite));
        let admin = Principal {
            scopes: vec!["*".into()],
            ..reader
        };
        assert!(admin.allows(Scope::TasksWrite));
    }
}
