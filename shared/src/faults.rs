//! Faults a role found that an operator must fix: shown by `/readyz` (503, with what to
//! do) until the role clears them.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// The open faults of one process, by the component that raised them.
#[derive(Debug, Clone, Default)]
pub struct Faults(Arc<Mutex<BTreeMap<&'static str, String>>>);

impl Faults {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<&'static str, String>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Raises (or replaces) `component`'s fault: what is wrong and what to do.
    pub fn raise(&self, component: &'static str, message: String) {
        self.lock().insert(component, message);
    }

    /// Clears `component`'s fault.
    pub fn clear(&self, component: &'static str) {
        self.lock().remove(component);
    }

    /// One open fault, if any: its component and message.
    pub fn first(&self) -> Option<(&'static str, String)> {
        self.lock()
            .iter()
            .next()
            .map(|(component, message)| (*component, message.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_open_and_clear() {
        let faults = Faults::default();
        assert_eq!(faults.first(), None);
        faults.raise("projector", "stream AXON was recreated".into());
        assert_eq!(
            faults.first(),
            Some(("projector", "stream AXON was recreated".to_owned()))
        );
        faults.clone().clear("projector");
        assert_eq!(faults.first(), None);
    }
}
