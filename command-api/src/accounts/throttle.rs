//! Failed logins slow down: after [`FREE_FAILURES`] failures for one email or from one
//! address within [`WINDOW`], each further attempt must wait twice as long as the last
//! (from 1 s, at most [`MAX_WAIT`]). Kept per process.

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
    /// How long `keys` (an email and an address) must still wait, if at all.
    pub fn wait(&self, keys: &[String]) -> Option<Duration> {
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
    pub fn failed(&self, keys: &[String]) {
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

    /// Forgets an email's failures after it signed in.
    pub fn succeeded(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_begin_after_the_free_failures_and_grow() {
        let throttle = Throttle::default();
        let keys = ["email:a@b.c".to_owned()];
        for _ in 0..FREE_FAILURES {
            assert_eq!(throttle.wait(&keys), None);
            throttle.failed(&keys);
        }
        let first = throttle.wait(&keys).expect("a wait");
        throttle.failed(&keys);
        let second = throttle.wait(&keys).expect("a longer wait");
        assert!(
            first <= Duration::from_secs(1) && second > first,
            "{first:?} {second:?}"
        );
        throttle.succeeded(&keys[0]);
        assert_eq!(throttle.wait(&keys), None);
    }
}
