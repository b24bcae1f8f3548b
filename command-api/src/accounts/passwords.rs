//! Passwords: the policy (length, not a common password, not the email) and Argon2id
//! hashes as PHC strings. Hashing is CPU and memory heavy (64 MiB, 3 passes, 4 lanes): it
//! runs on a blocking thread.

use argon2::{Algorithm, Argon2, Params, PasswordHasher, PasswordVerifier, Version};

/// Fewest characters a password may have.
pub const MIN_CHARS: usize = 10;
/// Most bytes a password may have (longer ones only cost hashing time).
pub const MAX_BYTES: usize = 256;

/// Passwords people pick first, refused whatever their length.
const COMMON: &str = include_str!("common-passwords.txt");

/// Why a password is refused (the message says what to do).
pub fn refused(password: &str, email: &str) -> Option<String> {
    let chars = password.chars().count();
    if chars < MIN_CHARS {
        return Some(format!(
            "the password has {chars} characters; use at least {MIN_CHARS}"
        ));
    }
    if password.len() > MAX_BYTES {
        return Some(format!(
            "the password is longer than {MAX_BYTES} bytes; use a shorter one"
        ));
    }
    let lower = password.to_lowercase();
    let first = lower.chars().next();
    if lower.chars().all(|c| Some(c) == first)
        || COMMON.lines().any(|common| common == lower)
        || lower == email.to_lowercase()
        || email
            .split('@')
            .next()
            .is_some_and(|local| lower == local.to_lowercase())
    {
        return Some(
            "the password is too easy to guess (a common password, or your email); choose another"
                .into(),
        );
    }
    None
}

/// The hasher: Argon2id with the standard cost, or (`fast`, tests only) a tiny one.
#[derive(Debug, Clone, Copy)]
pub struct Hasher {
    fast: bool,
}

impl Hasher {
    /// A hasher of the given cost.
    pub fn new(fast: bool) -> Self {
        Self { fast }
    }

    fn argon2(self) -> Argon2<'static> {
        let (memory_kib, passes, lanes) = if self.fast {
            (1024, 1, 1)
        } else {
            (64 * 1024, 3, 4)
        };
        let params = Params::new(memory_kib, passes, lanes, None).expect("valid Argon2 parameters");
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
    }

    /// The PHC string of `password`, with a fresh salt.
    pub fn hash(self, password: &str) -> String {
        self.argon2()
            .hash_password(password.as_bytes())
            .expect("Argon2id hashes any password within MAX_BYTES")
            .to_string()
    }

    /// Whether `password` matches the PHC string `hash` (whatever cost made it).
    pub fn verify(self, password: &str, hash: &str) -> bool {
        self.argon2()
            .verify_password(password.as_bytes(), hash)
            .is_ok()
    }

    /// A hash no password matches cheaply: checked when the email is unknown, so a login
    /// takes as long either way.
    pub fn decoy(self) -> String {
        self.hash("decoy password that no account has")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy() {
        assert!(refused("short", "a@b.c").is_some());
        assert!(
            refused("Password123", "a@b.c").is_some(),
            "common, whatever the case"
        );
        assert!(refused("aaaaaaaaaaaa", "a@b.c").is_some());
        assert!(refused("alice.smith", "alice.smith@example.com").is_some());
        assert!(refused(&"x".repeat(300), "a@b.c").is_some());
        assert_eq!(refused("correct horse battery staple", "a@b.c"), None);
    }

    #[test]
    fn hashes_verify_only_their_password() {
        let hasher = Hasher::new(true);
        let hash = hasher.hash("correct horse battery staple");
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(hasher.verify("correct horse battery staple", &hash));
        assert!(!hasher.verify("correct horse battery stapler", &hash));
        assert!(!hasher.verify("anything", "not a hash"));
        let standard = Hasher::new(false);
        assert!(standard.argon2().params().m_cost() == 64 * 1024);
    }
}
