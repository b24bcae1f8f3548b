//! Failed logins slow down: after [`FREE_FAILURES`] failures for one email or from one
//! address (IPv6: one /64) within [`WINDOW`], each further attempt must wait twice as long
//! as the last (from 1 s, at most [`MAX_WAIT`]). An attempt counts as a failure until it
//! succeeds, so parallel guesses are counted too. Kept per process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// Failures allowed before waits begin.
pub const FREE_FAILURES: u32 = 5;
/// How long failures are remembered.
pub const WINDOW: Duration = Duration::from_secs(15 * 60);
/// The longest wait.
pub const MAX_WAIT: Duration = Duration::from_secs(300);
/// Most emails and addresses remembered (older ones are forgotten first).
const MAX_ENTRIES: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
}

/// Failed logins per email and per address. Clones share them.
#[derive(Debug, Clone, Default)]
pub struct Throttle {
    failures: Arc<Mutex<HashMap<String, Failures>>>,
}

impl Throttle {
    /// Takes an attempt for `keys` (an email and an address): counted as a failure until
    /// [`Throttle::succeeded`] says otherwise, so parallel guesses count too; or how long
    /// they must still wait.
    pub fn attempt(&self, keys: &[String]) -> Result<(), Duration> {
        if let Some(wait) = self.wait(keys) {
            return Err(wait);
        }
        self.failed(keys);
        Ok(())
    }

    /// How long `keys` must still wait, if at all.
    fn wait(&self, keys: &[String]) -> Option<Duration> {
        let failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        keys.iter()
            .filter_map(|key| failures.get(key))
            .filter(|f| f.count >= FREE_FAILURES && now.duration_since(f.last) < WINDOW)
            .filter_map(|f| {
                let exponent = (f.count - FREE_FAILURES).min(16);
                let wait = Duration::from_secs(1 << exponent).min(MAX_WAIT);
                (f.last + wait).checked_duration_since(now)
            })
            .max()
    }

    /// Counts a failure for each of `keys`.
    fn failed(&self, keys: &[String]) {
        let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        if failures.len() >= MAX_ENTRIES {
            failures.retain(|_, f| now.duration_since(f.last) < WINDOW);
        }
        for key in keys {
            let entry = failures.entry(key.clone()).or_insert(Failures {
                count: 0,
                last: now,
            });
            if now.duration_since(entry.last) >= WINDOW {
                entry.count = 0;
            }
            entry.count += 1;
            entry.last = now;
        }
    }

    /// Takes back the attempt of a login that succeeded, and forgets the email's failures
    /// (`keys[0]`).
    pub fn succeeded(&self, keys: &[String]) {
        let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        for (n, key) in keys.iter().enumerate() {
            match failures.get_mut(key) {
                Some(_) if n == 0 => {
                    failures.remove(key);
                }
                Some(entry) => entry.count = entry.count.saturating_sub(1),
                None => {}
            }
        }
    }
}

/// The throttle's key for a peer address: IPv6 by its /64 (one customer's prefix), an
/// IPv4-mapped IPv6 address as the IPv4 one.
pub fn address_key(ip: std::net::IpAddr) -> String {
    match ip.to_canonical() {
        std::net::IpAddr::V4(v4) => format!("addr:{v4}"),
        std::net::IpAddr::V6(v6) => {
            let prefix = v6.segments();
            format!(
                "addr:{:x}:{:x}:{:x}:{:x}::/64",
                prefix[0], prefix[1], prefix[2], prefix[3]
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_begin_after_the_free_failures_and_grow() {
        let throttle = Throttle::default();
        let keys = ["email:a@b.c".to_owned(), "addr:10.0.0.1".to_owned()];
        for _ in 0..FREE_FAILURES {
            assert_eq!(throttle.attempt(&keys), Ok(()));
        }
        let first = throttle.attempt(&keys).expect_err("a wait");
        assert!(first <= Duration::from_secs(1), "{first:?}");
        throttle.succeeded(&keys);
        assert_eq!(throttle.attempt(&keys), Ok(()), "the email is forgiven");
        throttle.succeeded(&keys);
        let addr = ["email:other@b.c".to_owned(), keys[1].clone()];
        assert!(
            throttle.attempt(&addr).is_ok(),
            "one success took one failure back"
        );
    }

    #[test]
    fn ipv6_peers_share_their_64() {
        let a = address_key("2001:db8:1:2::1".parse().expect("ip"));
        let b = address_key("2001:db8:1:2:ffff::9".parse().expect("ip"));
        assert_eq!(a, b);
        assert_ne!(a, address_key("2001:db8:1:3::1".parse().expect("ip")));
    }
}
