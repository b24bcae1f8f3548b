//! Tenants' work-queue consumers (`shared::queue`): made before a tenant's first start is
//! published, and made again (the same config, or the plan's new concurrency) at most once
//! a minute per tenant and process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_nats::jetstream::stream::Stream;
use shared::http::ApiError;
use shared::ids::TenantId;

/// How long a made consumer is taken as current.
const FRESH: Duration = Duration::from_secs(60);

/// The tenants whose consumer this process has made: with which concurrency, and when.
#[derive(Clone, Default)]
pub struct Queues {
    made: Arc<Mutex<HashMap<TenantId, (u32, Instant)>>>,
}

impl Queues {
    /// Makes (or updates) `tenant`'s consumer on `axon`, running at most `concurrency`
    /// tasks at once, unless this process did so within a minute.
    pub async fn ensure(
        &self,
        axon: &Stream,
        tenant: TenantId,
        ack_wait: Duration,
        concurrency: u32,
    ) -> Result<(), ApiError> {
        let current = self
            .lock()
            .get(&tenant)
            .is_some_and(|(made, at)| *made == concurrency && at.elapsed() < FRESH);
        if current {
            return Ok(());
        }
        let config = shared::queue::consumer_config(tenant, ack_wait, concurrency);
        axon.create_consumer(config)
            .await
            .map_err(|e| ApiError::unavailable("nats", e))?;
        self.lock().insert(tenant, (concurrency, Instant::now()));
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TenantId, (u32, Instant)>> {
        self.made.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
