//! Receipts (§3.3) and signed tree heads (§3.3a): each an object signed over its JCS.

use serde::{Deserialize, Serialize};

use super::merkle::{self, Hash};
use super::signer::{PublicKey, Signer};
use crate::ids::{TaskId, TenantId};

/// The only signature algorithm.
pub const ALG: &str = "Ed25519";

/// What a receipt states: the task ended in `state` with event `last_seq`, whose hash is
/// `hash_curr`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Receipt {
    /// The task.
    pub task_id: TaskId,
    /// Its tenant.
    pub tenant_id: TenantId,
    /// Its terminal state.
    pub state: String,
    /// The seq of its terminal event.
    pub last_seq: u64,
    /// The `hash_curr` of its terminal event.
    pub hash_curr: String,
    /// When the receipt was issued (RFC 3339, 6 fractional digits, `Z`).
    pub issued_at: String,
    /// The signing key's RFC 7638 thumbprint.
    pub key_id: String,
}

/// A receipt and its signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedReceipt {
    /// What is signed.
    pub receipt: Receipt,
    /// `Ed25519`.
    pub alg: String,
    /// Base64url (no padding) Ed25519 signature over `JCS(receipt)`.
    pub signature: String,
}

/// A signed statement of a tenant log's size and root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Head {
    /// The tenant whose log this is.
    pub tenant_id: TenantId,
    /// Receipts in the tree.
    pub tree_size: u64,
    /// Lowercase hex root hash.
    pub root_hash: String,
    /// When it was signed.
    pub issued_at: String,
    /// The signing key's thumbprint.
    pub key_id: String,
}

/// A tree head and its signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedHead {
    /// What is signed.
    pub head: Head,
    /// `Ed25519`.
    pub alg: String,
    /// Base64url Ed25519 signature over `JCS(head)`.
    pub signature: String,
}

/// Why a signature does not check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// No published key has that id.
    #[error("key {0} is not among the published keys")]
    UnknownKey(String),
    /// The algorithm is not Ed25519.
    #[error("alg is '{0}'; only Ed25519 is used")]
    Alg(String),
    /// The signature does not verify.
    #[error("the signature does not verify with key {0}")]
    Bad(String),
}

fn canonical<T: Serialize>(value: &T) -> Vec<u8> {
    serde_jcs::to_vec(value).expect("strings and integers canonicalize")
}

fn check(
    keys: &[PublicKey],
    key_id: &str,
    alg: &str,
    message: &[u8],
    signature: &str,
) -> Result<(), SignatureError> {
    let key = keys
        .iter()
        .find(|k| k.kid == key_id)
        .ok_or_else(|| SignatureError::UnknownKey(key_id.to_owned()))?;
    if alg != ALG {
        return Err(SignatureError::Alg(alg.to_owned()));
    }
    if key.verifies(message, signature) {
        Ok(())
    } else {
        Err(SignatureError::Bad(key_id.to_owned()))
    }
}

impl Receipt {
    /// `JCS(receipt)`: what is signed, and the data of its log leaf.
    pub fn canonical(&self) -> Vec<u8> {
        canonical(self)
    }

    /// Its leaf hash in the tenant log.
    pub fn leaf_hash(&self) -> Hash {
        merkle::leaf_hash(&self.canonical())
    }

    /// Signs it (its `key_id` must be the signer's).
    pub fn sign(self, signer: &Signer) -> SignedReceipt {
        SignedReceipt {
            signature: signer.sign(&self.canonical()),
            receipt: self,
            alg: ALG.into(),
        }
    }
}

impl SignedReceipt {
    /// Checks the signature against the published `keys`.
    pub fn check(&self, keys: &[PublicKey]) -> Result<(), SignatureError> {
        let r = &self.receipt;
        check(keys, &r.key_id, &self.alg, &r.canonical(), &self.signature)
    }
}

impl Head {
    /// Signs it (its `key_id` must be the signer's).
    pub fn sign(self, signer: &Signer) -> SignedHead {
        SignedHead {
            signature: signer.sign(&canonical(&self)),
            head: self,
            alg: ALG.into(),
        }
    }

    /// The root hash as bytes (zeros if it is not 64 hex digits, which verifies nothing).
    pub fn root(&self) -> Hash {
        hex::decode(&self.root_hash)
            .ok()
            .and_then(|b| b.try_into().ok())
            .unwrap_or([0; 32])
    }
}

impl SignedHead {
    /// Checks the signature against the published `keys`.
    pub fn check(&self, keys: &[PublicKey]) -> Result<(), SignatureError> {
        let h = &self.head;
        check(keys, &h.key_id, &self.alg, &canonical(h), &self.signature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn receipt(signer: &Signer) -> Receipt {
        Receipt {
            task_id: TaskId(Uuid::from_u128(1)),
            tenant_id: TenantId(Uuid::from_u128(2)),
            state: "succeeded".into(),
            last_seq: 4,
            hash_curr: "ab".repeat(32),
            issued_at: "2026-11-27T07:19:16.123456Z".into(),
            key_id: signer.public().kid.clone(),
        }
    }

    #[test]
    fn canonical_form_is_sorted_compact_json() {
        let signer = Signer::from_seed([7; 32]);
        let text = String::from_utf8(receipt(&signer).canonical()).expect("utf-8");
        assert_eq!(
            text,
            format!(
                r#"{{"hash_curr":"{}","issued_at":"2026-11-27T07:19:16.123456Z","key_id":"{}","last_seq":4,"state":"succeeded","task_id":"00000000-0000-0000-0000-000000000001","tenant_id":"00000000-0000-0000-0000-000000000002"}}"#,
                "ab".repeat(32),
                signer.public().kid
            )
        );
    }

    #[test]
    fn a_signed_receipt_checks_only_with_its_key_and_unchanged() {
        let signer = Signer::from_seed([7; 32]);
        let other = Signer::from_seed([8; 32]);
        let signed = receipt(&signer).sign(&signer);
        let keys = [signer.public().clone()];
        assert_eq!(signed.check(&keys), Ok(()));
        assert!(matches!(
            signed.check(&[other.public().clone()]),
            Err(SignatureError::UnknownKey(_))
        ));
        let mut changed = signed.clone();
        changed.receipt.last_seq = 5;
        assert!(matches!(changed.check(&keys), Err(SignatureError::Bad(_))));
        let mut alg = signed;
        alg.alg = "none".into();
        assert!(matches!(alg.check(&keys), Err(SignatureError::Alg(_))));
    }
}
