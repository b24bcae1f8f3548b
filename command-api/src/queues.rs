//! Tenants' work-queue consumers (`shared::queue`): made before a tenant's first start is
//! published, once per process.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_nats::jetstream::stream::Stream;
use shared::http::ApiError;
use shared::ids::TenantId;

/// The tenants whose consumer this process has made.
#[derive(Clone, Default)]
pub struct Queues {
    made: Arc<Mutex<HashSet<TenantId>>>,
}

impl Queues {
    /// Makes `tenant`'s consumer on `axon` unless this process already did (making it
    /// again is harmless: the config is the same).
    pub async fn ensure(
        &self,
        axon: &Stream,
        tenant: TenantId,
        ack_wait: Duration,
    ) -> Result<(), ApiError> {
        if self.lock().contains(&tenant) {
            return Ok(());
        }
        axon.create_consumer(shared::queue::consumer_config(tenant, ack_wait))
            .await
            .map_err(|e| ApiError::unavailable("nats", e))?;
        self.lock().insert(tenant);
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<TenantId>> {
        self.made.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
