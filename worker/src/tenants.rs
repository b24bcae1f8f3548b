//! How a worker hears which tenants may have start commands waiting: every start
//! published (a plain subscription on the start subjects, which costs no round trip), and
//! a scan of the tenant consumers every few seconds for what that missed (this worker was
//! down, or another worker died holding commands that are now due again).

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_nats::jetstream::stream::Stream;
use futures::StreamExt;
use shared::ids::TenantId;
use shared::queue;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// How often the tenant consumers are scanned.
const SCAN: Duration = Duration::from_secs(2);
/// When a tenant heard of by a live start is heard of again. A plain subscriber may get the
/// start before JetStream has stored it, and then the take finds nothing: without a second
/// look, the task waited for the next scan (up to 2 s, seen in the benchmark).
const AGAIN: Duration = Duration::from_millis(20);

/// Tenants heard of since the scheduler last looked.
#[derive(Clone, Default)]
pub(crate) struct Heard {
    tenants: Arc<Mutex<HashSet<TenantId>>>,
    news: Arc<Notify>,
}

impl Heard {
    /// Hears of `tenant`.
    pub fn add(&self, tenant: TenantId) {
        self.lock().insert(tenant);
        self.news.notify_one();
    }

    /// The tenants heard of since the last call.
    pub fn take(&self) -> Vec<TenantId> {
        self.lock().drain().collect()
    }

    /// Returns once a tenant was heard of (at once if one was since the last wait).
    pub async fn wait(&self) {
        self.news.notified().await;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<TenantId>> {
        self.tenants.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Fills `heard` until `shutdown`.
pub(crate) async fn listen(
    client: async_nats::Client,
    axon: Stream,
    heard: Heard,
    shutdown: CancellationToken,
) {
    let mut starts = match client.subscribe(queue::START_FILTER).await {
        Ok(subscriber) => Some(subscriber),
        Err(e) => {
            tracing::warn!(error = %e, "cannot hear start commands; new work is found by scanning every {SCAN:?}");
            None
        }
    };
    let mut scan = tokio::time::interval(SCAN);
    // Tenants to hear of again, and when.
    let mut again: HashSet<TenantId> = HashSet::new();
    let mut again_at = tokio::time::Instant::now();
    loop {
        tokio::select! {
            Some(start) = async { starts.as_mut()?.next().await } => {
                if let Some(tenant) = queue::tenant_of_subject(&start.subject) {
                    heard.add(tenant);
                    if again.is_empty() {
                        again_at = tokio::time::Instant::now() + AGAIN;
                    }
                    again.insert(tenant);
                }
            }
            () = tokio::time::sleep_until(again_at), if !again.is_empty() => {
                for tenant in again.drain() {
                    heard.add(tenant);
                }
            }
            _ = scan.tick() => scan_consumers(&axon, &heard).await,
            () = shutdown.cancelled() => return,
        }
    }
}

/// Hears every tenant whose consumer has commands not yet delivered or not yet acked
/// (those may be due again).
async fn scan_consumers(axon: &Stream, heard: &Heard) {
    let mut consumers = axon.consumers();
    while let Some(info) = consumers.next().await {
        match info {
            Ok(info) if info.num_pending > 0 || info.num_ack_pending > 0 => {
                if let Some(tenant) = queue::tenant_of(&info.name) {
                    heard.add(tenant);
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "cannot list the tenant consumers; retrying");
                return;
            }
        }
    }
}
