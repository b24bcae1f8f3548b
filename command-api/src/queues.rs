//! Tenants' work-queue consumers (`shared::queue`): made before a tenant's first start is
//! published, and made again (the same config, or the plan's new concurrency) at most once
//! a minute per tenant and process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{self, DeliverPolicy};
use async_nats::jetstream::context::ConsumerInfoErrorKind;
use async_nats::jetstream::stream::Stream;
use shared::http::ApiError;
use shared::ids::TenantId;
use shared::queue;

/// How long a made consumer is taken as current.
const FRESH: Duration = Duration::from_secs(60);

/// The tenants whose consumer this process has made: with which concurrency, and when.
#[derive(Clone, Default)]
pub struct Queues {
    made: Arc<Mutex<HashMap<TenantId, (u32, Instant)>>>,
}

impl Queues {
    /// Makes `tenant`'s consumer on `axon` if it is missing, or updates its concurrency
    /// and ack wait, unless this process did so within a minute.
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
        let nats = |e: async_nats::Error| ApiError::unavailable("nats", e);
        let name = queue::consumer_name(tenant);
        match axon.consumer_info(&name).await {
            Ok(info) => {
                let wanted = i64::from(concurrency);
                if info.config.max_ack_pending != wanted || info.config.ack_wait != ack_wait {
                    let config = consumer::Config {
                        max_ack_pending: wanted,
                        ack_wait,
                        ..info.config
                    };
                    axon.update_consumer(config)
                        .await
                        .map_err(|e| nats(e.into()))?;
                }
            }
            Err(e) if e.kind() == ConsumerInfoErrorKind::NotFound => {
                let config =
                    queue::consumer_config(tenant, ack_wait, concurrency, DeliverPolicy::New);
                // Another process may make it at the same moment, alike.
                axon.create_consumer_strict(config)
                    .await
                    .map_err(|e| nats(e.into()))?;
            }
            Err(e) => return Err(nats(e.into())),
        }
        self.lock().insert(tenant, (concurrency, Instant::now()));
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TenantId, (u32, Instant)>> {
        self.made.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
