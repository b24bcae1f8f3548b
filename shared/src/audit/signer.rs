//! Ed25519 keys for receipts and tree heads (§3.3): the signing key from
//! `RECEIPT_SIGNING_KEY_ED25519` (or a development key kept under the data folder), and
//! the published public keys as an RFC 8037 JWKS, each named by its RFC 7638 thumbprint.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::pkcs8::DecodePrivateKey;
use ed25519_dalek::{Signature, SigningKey, VerifyingKey};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The file, under the data folder, of the key made when none is configured.
pub const DEV_KEY_FILE: &str = "receipt-signing.key";

/// A key that cannot be read.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{0}")]
pub struct KeyError(pub String);

/// The key the projector signs with.
#[derive(Clone)]
pub struct Signer {
    key: SigningKey,
    public: PublicKey,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("key_id", &self.public.kid)
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// A signer from a PKCS#8 PEM private key or a base64url 32-byte seed.
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let text = text.trim();
        let key = if text.starts_with("-----BEGIN") {
            SigningKey::from_pkcs8_pem(text)
                .map_err(|e| KeyError(format!("not an Ed25519 PKCS#8 PEM private key: {e}")))?
        } else {
            let seed: [u8; 32] = decode_b64(text)
                .and_then(|bytes| bytes.try_into().ok())
                .ok_or_else(|| {
                    KeyError(
                        "expected a PKCS#8 PEM private key or a base64url 32-byte seed \
                         (openssl genpkey -algorithm ed25519)"
                            .into(),
                    )
                })?;
            SigningKey::from_bytes(&seed)
        };
        Ok(Self::from_key(key))
    }

    /// A signer from a seed.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self::from_key(SigningKey::from_bytes(&seed))
    }

    fn from_key(key: SigningKey) -> Self {
        let public = PublicKey::new(key.verifying_key());
        Self { key, public }
    }

    /// The development key in `dir`, made (readable by the owner only) if it is not there.
    pub fn dev_key(dir: &Path) -> Result<Self, KeyError> {
        let path = dir.join(DEV_KEY_FILE);
        let failed = |e: std::io::Error| KeyError(format!("{}: {e}", path.display()));
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                Self::parse(&text).map_err(|e| KeyError(format!("{}: {}", path.display(), e.0)))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut seed = [0u8; 32];
                rand::rng().fill_bytes(&mut seed);
                std::fs::create_dir_all(dir).map_err(failed)?;
                // Written whole under another name, then linked: a process starting at the
                // same moment reads either no key or this one, never half of it.
                let draft = dir.join(format!(".{DEV_KEY_FILE}.{}", std::process::id()));
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(&draft)
                    .map_err(failed)?;
                writeln!(file, "{}", URL_SAFE_NO_PAD.encode(seed)).map_err(failed)?;
                drop(file);
                let linked = std::fs::hard_link(&draft, &path);
                let _ = std::fs::remove_file(&draft);
                match linked {
                    Ok(()) => Ok(Self::from_seed(seed)),
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Self::dev_key(dir),
                    Err(e) => Err(failed(e)),
                }
            }
            Err(e) => Err(failed(e)),
        }
    }

    /// The public half.
    pub fn public(&self) -> &PublicKey {
        &self.public
    }

    /// The base64url signature over `message`.
    pub fn sign(&self, message: &[u8]) -> String {
        use ed25519_dalek::Signer as _;
        URL_SAFE_NO_PAD.encode(self.key.sign(message).to_bytes())
    }
}

/// A published public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    /// The RFC 7638 thumbprint.
    pub kid: String,
    key: VerifyingKey,
}

impl PublicKey {
    fn new(key: VerifyingKey) -> Self {
        let x = URL_SAFE_NO_PAD.encode(key.to_bytes());
        // RFC 7638 §3.2: the required members of an OKP key, sorted, no whitespace.
        let members = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
        let kid = URL_SAFE_NO_PAD.encode(Sha256::digest(members.as_bytes()));
        Self { kid, key }
    }

    /// A key from its base64url 32 bytes (a JWK's `x`).
    pub fn parse(x: &str) -> Result<Self, KeyError> {
        let bytes: [u8; 32] = decode_b64(x.trim())
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or_else(|| KeyError(format!("'{x}' is not a base64url 32-byte Ed25519 key")))?;
        VerifyingKey::from_bytes(&bytes)
            .map(Self::new)
            .map_err(|_| KeyError(format!("'{x}' is not an Ed25519 public key")))
    }

    /// The base64url key (a JWK's `x`).
    pub fn x(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.key.to_bytes())
    }

    /// Whether `signature` (base64url) is this key's signature over `message`.
    pub fn verifies(&self, message: &[u8], signature: &str) -> bool {
        let Some(bytes) = decode_b64(signature).and_then(|b| <[u8; 64]>::try_from(b).ok()) else {
            return false;
        };
        self.key
            .verify_strict(message, &Signature::from_bytes(&bytes))
            .is_ok()
    }

    /// This key as a JWK.
    pub fn jwk(&self) -> Jwk {
        Jwk {
            kty: "OKP".into(),
            crv: "Ed25519".into(),
            kid: self.kid.clone(),
            x: self.x(),
        }
    }
}

/// Base64url, with or without padding.
fn decode_b64(text: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')).ok()
}

/// One key of a JWKS (RFC 8037).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Jwk {
    /// `OKP`.
    pub kty: String,
    /// `Ed25519`.
    pub crv: String,
    /// The RFC 7638 thumbprint.
    pub kid: String,
    /// The base64url public key.
    pub x: String,
}

/// `GET /.well-known/axontask/keys`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Jwks {
    /// Every key whose signatures verify, current and retired.
    pub keys: Vec<Jwk>,
}

impl Jwks {
    /// A JWKS of `keys`, each once.
    pub fn of(keys: &[PublicKey]) -> Self {
        let mut jwks = Self::default();
        for key in keys {
            if !jwks.keys.iter().any(|k| k.kid == key.kid) {
                jwks.keys.push(key.jwk());
            }
        }
        jwks
    }

    /// The Ed25519 keys, each checked against its `kid` (one that does not match its
    /// thumbprint is left out: it could not have signed under that name).
    pub fn public_keys(&self) -> Vec<PublicKey> {
        self.keys
            .iter()
            .filter(|k| k.kty == "OKP" && k.crv == "Ed25519")
            .filter_map(|k| PublicKey::parse(&k.x).ok().filter(|p| p.kid == k.kid))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_8037_example_key_has_the_rfc_thumbprint() {
        // RFC 8037 appendix A.1 and A.3.
        let signer = Signer::parse("nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A").expect("seed");
        assert_eq!(
            signer.public().x(),
            "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
        );
        assert_eq!(
            signer.public().kid,
            "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
        );
        // A.4: the signature of "Example of Ed25519 signing" (JWS signing input).
        let input = b"eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc";
        let signature = signer.sign(input);
        assert_eq!(
            signature,
            "hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg"
        );
        assert!(signer.public().verifies(input, &signature));
        assert!(!signer.public().verifies(b"other", &signature));
        assert!(!signer.public().verifies(input, "not base64!"));
    }

    #[test]
    fn pem_and_seed_give_the_same_key_and_junk_is_refused() {
        // RFC 8410 §10.3's example private key.
        let pem = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC\n-----END PRIVATE KEY-----\n";
        let from_pem = Signer::parse(pem).expect("pem");
        let seed = "1O5y2_kTWErVttjx92n4rTr-fCjL8dT74Jeoj0R1WEI";
        assert_eq!(
            from_pem.public(),
            Signer::parse(seed).expect("seed").public()
        );
        assert!(Signer::parse("c2hvcnQ").is_err());
        assert!(
            Signer::parse("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----").is_err()
        );
    }

    #[test]
    fn dev_key_is_made_once_and_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = Signer::dev_key(dir.path()).expect("made");
        let again = Signer::dev_key(dir.path()).expect("read");
        assert_eq!(first.public(), again.public());
        let mode = std::fs::metadata(dir.path().join(DEV_KEY_FILE))
            .expect("file")
            .permissions();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(mode.mode() & 0o777, 0o600);
    }

    #[test]
    fn jwks_keeps_only_keys_that_match_their_kid() {
        let a = Signer::from_seed([1; 32]);
        let b = Signer::from_seed([2; 32]);
        let mut jwks = Jwks::of(&[a.public().clone(), b.public().clone(), a.public().clone()]);
        assert_eq!(jwks.keys.len(), 2);
        jwks.keys[1].kid = a.public().kid.clone();
        assert_eq!(jwks.public_keys(), vec![a.public().clone()]);
    }
}
