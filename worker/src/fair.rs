//! Fair taking of start commands: tenants take turns, one command per free slot, so a
//! tenant with thousands waiting delays another tenant's task by one slot at most. Within
//! a tenant, the highest priority among its next [`WINDOW`] waiting commands runs first,
//! the oldest first among equals.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::time::Duration;

use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::stream::Stream;
use async_nats::jetstream::{AckKind, Message};
use futures::StreamExt;
use shared::ids::TenantId;
use shared::queue;

/// How many of a tenant's waiting commands a worker looks at to find the highest priority.
pub(crate) const WINDOW: usize = 64;
/// How long a take waits for the next command of a reply before it stops reading.
const IDLE: Duration = Duration::from_millis(20);
/// When the server ends a take's request at the latest.
const EXPIRES: Duration = Duration::from_millis(200);

/// A command taken from its tenant's consumer, not yet running.
struct Waiting {
    priority: u8,
    /// Its sequence in `AXON`: the order it was started in.
    seq: u64,
    message: Message,
}

impl Waiting {
    fn rank(&self) -> (u8, Reverse<u64>) {
        (self.priority, Reverse(self.seq))
    }
}

impl PartialEq for Waiting {
    fn eq(&self, other: &Self) -> bool {
        self.rank() == other.rank()
    }
}

impl Eq for Waiting {}

impl PartialOrd for Waiting {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Waiting {
    fn cmp(&self, other: &Self) -> Ordering {
        self.rank().cmp(&other.rank())
    }
}

/// One tenant's consumer and the commands taken from it.
struct Queue {
    consumer: PullConsumer,
    held: BinaryHeap<Waiting>,
    /// In the turn order now.
    in_turn: bool,
}

/// The tenants' queues and whose turn it is.
pub(crate) struct Fair {
    axon: Stream,
    ack_wait: Duration,
    queues: HashMap<TenantId, Queue>,
    /// Tenants that may have work, the next one first.
    turn: VecDeque<TenantId>,
}

impl Fair {
    /// No tenants yet; consumers are made on `axon` with `ack_wait` as heard of.
    pub fn new(axon: Stream, ack_wait: Duration) -> Self {
        Self {
            axon,
            ack_wait,
            queues: HashMap::new(),
            turn: VecDeque::new(),
        }
    }

    /// Gives heard-of tenants the next turns (they had none lately), making their
    /// consumers on first hearing.
    pub async fn hear(&mut self, tenants: Vec<TenantId>) {
        for tenant in tenants {
            if !self.queues.contains_key(&tenant) {
                match self.consumer(tenant).await {
                    Ok(consumer) => {
                        let queue = Queue {
                            consumer,
                            held: BinaryHeap::new(),
                            in_turn: false,
                        };
                        self.queues.insert(tenant, queue);
                    }
                    Err(e) => {
                        tracing::warn!(%tenant, error = %e, "cannot make the tenant's consumer; it is tried again when heard of");
                        continue;
                    }
                }
            }
            let queue = self.queues.get_mut(&tenant).expect("made above");
            if !queue.in_turn {
                queue.in_turn = true;
                self.turn.push_front(tenant);
            }
        }
    }

    /// `tenant`'s consumer; made when missing (a stream made anew), running tasks without
    /// a plan's limit until command-api applies it.
    async fn consumer(&self, tenant: TenantId) -> Result<PullConsumer, async_nats::Error> {
        match self.axon.get_consumer(&queue::consumer_name(tenant)).await {
            Ok(consumer) => Ok(consumer),
            Err(_) => {
                let config = queue::consumer_config(tenant, self.ack_wait, queue::UNLIMITED);
                Ok(self.axon.create_consumer_strict(config).await?)
            }
        }
    }

    /// The next command to run: the highest-priority waiting command of the next tenant
    /// in turn that has one. None when no tenant has work now.
    pub async fn next(&mut self) -> Option<Message> {
        let mut remade = Vec::new();
        while let Some(tenant) = self.turn.pop_front() {
            let queue = self
                .queues
                .get_mut(&tenant)
                .expect("tenants in turn have queues");
            let taken = if queue.held.len() <= WINDOW / 2 {
                take(queue, WINDOW - queue.held.len()).await
            } else {
                Ok(())
            };
            if let Err(e) = taken {
                tracing::warn!(%tenant, error = %e, "cannot take start commands; making the tenant's consumer again");
                self.forget(tenant).await;
                // Once: the stream may have been made anew, taking its consumers with it.
                if !remade.contains(&tenant) {
                    remade.push(tenant);
                    self.hear(vec![tenant]).await;
                }
                continue;
            }
            let queue = self.queues.get_mut(&tenant).expect("still there");
            if let Some(waiting) = queue.held.pop() {
                self.turn.push_back(tenant);
                return Some(waiting.message);
            }
            queue.in_turn = false;
        }
        None
    }

    /// Whether commands are taken but not running.
    pub fn holds(&self) -> bool {
        self.queues.values().any(|q| !q.held.is_empty())
    }

    /// Hands every taken command back (no slot freed for them, or shutdown), so another
    /// worker may run them.
    pub async fn release(&mut self) {
        for queue in self.queues.values_mut() {
            for waiting in queue.held.drain() {
                let _ = waiting.message.ack_with(AckKind::Nak(None)).await;
            }
        }
    }

    /// Drops a tenant whose consumer failed: its commands go back, and hearing of it
    /// again makes the consumer again.
    async fn forget(&mut self, tenant: TenantId) {
        if let Some(mut queue) = self.queues.remove(&tenant) {
            for waiting in queue.held.drain() {
                let _ = waiting.message.ack_with(AckKind::Nak(None)).await;
            }
        }
    }
}

/// Takes up to `wanted` commands waiting now (no more than the consumer may have unacked).
/// The server answers at once with what it has, except when the tenant is at its plan's
/// concurrency: then the request would stay open, so reading stops after a pause of
/// [`IDLE`] and the request expires soon after.
async fn take(queue: &mut Queue, wanted: usize) -> Result<(), async_nats::Error> {
    let most = usize::try_from(queue.consumer.cached_info().config.max_ack_pending)
        .unwrap_or(usize::MAX)
        .max(1);
    let mut batch = queue
        .consumer
        .fetch()
        .max_messages(wanted.min(most))
        .expires(EXPIRES)
        .messages()
        .await?;
    while let Ok(Some(message)) = tokio::time::timeout(IDLE, batch.next()).await {
        let message = message?;
        let seq = message.info()?.stream_sequence;
        let priority = queue::priority(message.headers.as_ref());
        queue.held.push(Waiting {
            priority,
            seq,
            message,
        });
    }
    Ok(())
}
