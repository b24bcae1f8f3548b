//! Open SSE streams per tenant on this process, against `SSE_MAX_STREAMS_PER_TENANT`, so
//! one tenant cannot take every connection a query-api can serve.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use shared::ids::TenantId;

/// The open streams of each tenant.
#[derive(Clone)]
pub struct OpenStreams {
    max: usize,
    open: Arc<Mutex<HashMap<TenantId, usize>>>,
}

/// One open stream, counted until dropped.
pub struct Slot {
    streams: OpenStreams,
    tenant: TenantId,
}

impl OpenStreams {
    /// At most `max` open streams per tenant.
    pub fn new(max: usize) -> Self {
        Self {
            max,
            open: Arc::default(),
        }
    }

    /// The limit per tenant.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Counts one more stream of `tenant`, unless it has `max` open already, or `quota`.
    pub fn take(&self, tenant: TenantId, quota: usize) -> Option<Slot> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let count = open.entry(tenant).or_insert(0);
        if *count >= self.max.min(quota) {
            return None;
        }
        *count += 1;
        Some(Slot {
            streams: self.clone(),
            tenant,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self
            .streams
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.tenant) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.tenant);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_gets_its_slots_back_as_streams_end() {
        let streams = OpenStreams::new(2);
        let (a, b) = (
            TenantId(uuid::Uuid::now_v7()),
            TenantId(uuid::Uuid::now_v7()),
        );
        let first = streams.take(a, usize::MAX).expect("one");
        let _second = streams.take(a, usize::MAX).expect("two");
        assert!(
            streams.take(a, usize::MAX).is_none(),
            "a third is over the limit"
        );
        assert!(
            streams.take(b, usize::MAX).is_some(),
            "another tenant is not affected"
        );
        drop(first);
        assert!(streams.take(a, usize::MAX).is_some(), "a slot came back");
    }
}
