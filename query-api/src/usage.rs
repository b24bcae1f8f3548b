//! Usage that query-api sees: SSE stream connections and the bytes of event data streamed,
//! per tenant and UTC day. Counted in memory and added to `usage_counters` once a second
//! (and at shutdown), one statement for everything counted.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{NaiveDate, Utc};
use shared::ids::TenantId;
use shared::usage::{self, Additions};
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// How often counts are written.
const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// Bytes a stream counts on its own before it adds them to the shared counts.
const STREAM_BATCH: u64 = 64 * 1024;

type Counts = HashMap<(TenantId, NaiveDate, &'static str), i64>;

/// How long the last write at shutdown waits for open streams to count their last bytes.
const LAST_WAIT: Duration = Duration::from_secs(5);

/// Counts not yet written.
#[derive(Clone, Default)]
pub struct Usage {
    pending: Arc<Mutex<Counts>>,
    /// Streams counting now, and news of the last one ending.
    streams: Arc<(AtomicUsize, Notify)>,
}

impl Usage {
    /// Counts `n` of `metric` for `tenant` today.
    pub fn add(&self, tenant: TenantId, metric: &'static str, n: u64) {
        let key = (tenant, Utc::now().date_naive(), metric);
        *self.lock().entry(key).or_insert(0) += i64::try_from(n).unwrap_or(i64::MAX);
    }

    /// A stream's bytes counter for `tenant` (its connection is counted now).
    pub fn stream(&self, tenant: TenantId) -> StreamUsage {
        self.add(tenant, usage::STREAM_CONNECTIONS, 1);
        self.streams.0.fetch_add(1, Ordering::SeqCst);
        StreamUsage {
            usage: self.clone(),
            tenant,
            bytes: 0,
        }
    }

    /// Writes the counts every second until `shutdown`, then once more when the open
    /// streams (which end at shutdown) have counted their last bytes.
    pub async fn flush_every_second(self, pool: PgPool, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(FLUSH_EVERY);
        loop {
            let stopping = tokio::select! {
                _ = tick.tick() => false,
                () = shutdown.cancelled() => true,
            };
            if stopping {
                let _ = tokio::time::timeout(LAST_WAIT, self.streams_ended()).await;
            }
            let counts = std::mem::take(&mut *self.lock());
            if !counts.is_empty()
                && let Err(e) = write(&pool, &counts).await
            {
                tracing::warn!(error = %e, "cannot write stream usage; retrying with the next batch");
                let mut pending = self.lock();
                for (key, value) in counts {
                    *pending.entry(key).or_insert(0) += value;
                }
            }
            if stopping {
                return;
            }
        }
    }

    async fn streams_ended(&self) {
        let (open, ended) = &*self.streams;
        loop {
            let notified = ended.notified();
            if open.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One stream's bytes, added to the shared counts in batches and when it ends.
pub struct StreamUsage {
    usage: Usage,
    tenant: TenantId,
    bytes: u64,
}

impl StreamUsage {
    /// Counts `bytes` of event data sent.
    pub fn sent(&mut self, bytes: usize) {
        self.bytes += bytes as u64;
        if self.bytes >= STREAM_BATCH {
            self.usage.add(
                self.tenant,
                usage::BYTES_STREAMED,
                std::mem::take(&mut self.bytes),
            );
        }
    }
}

impl Drop for StreamUsage {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.usage
                .add(self.tenant, usage::BYTES_STREAMED, self.bytes);
        }
        let (open, ended) = &*self.usage.streams;
        if open.fetch_sub(1, Ordering::SeqCst) == 1 {
            ended.notify_waiters();
        }
    }
}

async fn write(pool: &PgPool, counts: &Counts) -> Result<(), sqlx::Error> {
    let mut additions = Additions::default();
    for ((tenant, day, metric), value) in counts {
        additions.push(tenant.0, *day, metric, *value);
    }
    additions.write(pool).await
}
