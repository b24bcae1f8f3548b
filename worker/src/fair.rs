//! Fair taking of start commands: tenants take turns, one command per free slot, so a
//! tenant with thousands waiting delays another tenant's task by one slot at most. Within
//! a tenant, the highest priority among the commands taken runs first, the oldest first
//! among equals: up to [`WINDOW`] of its next waiting commands, and no more than its
//! consumer lets be taken at once (its plan's concurrency).
//!
//! A command taken and not yet running must not outlive its ack wait (another worker would
//! run it too): one held for a third of it (at most 2 s) is handed back
//! ([`Fair::release_stale`]), and taken again by whichever worker has a slot first.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{DeliverPolicy, PullConsumer};
use async_nats::jetstream::stream::Stream;
use async_nats::jetstream::{AckKind, Message};
use futures::StreamExt;
use shared::ids::TenantId;
use shared::queue;

/// How many of a tenant's waiting commands a worker looks at to find the highest priority.
const WINDOW: usize = 64;

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
    /// When the oldest held command was taken.
    held_since: Option<Instant>,
    /// In the turn order now.
    in_turn: bool,
}

impl Queue {
    /// Hands every held command back.
    async fn hand_back(&mut self) {
        for waiting in self.held.drain() {
            let _ = waiting.message.ack_with(AckKind::Nak(None)).await;
        }
        self.held_since = None;
    }
}

/// The tenants' queues and whose turn it is.
pub(crate) struct Fair {
    axon: Stream,
    ack_wait: Duration,
    queues: HashMap<TenantId, Queue>,
    /// Tenants that may have work, the next one first.
    turn: VecDeque<TenantId>,
    /// When held commands were last looked at for their age.
    checked: Instant,
}

impl Fair {
    /// No tenants yet; consumers are made on `axon` with `ack_wait` as heard of.
    pub fn new(axon: Stream, ack_wait: Duration) -> Self {
        Self {
            axon,
            ack_wait,
            queues: HashMap::new(),
            turn: VecDeque::new(),
            checked: Instant::now(),
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
                            held_since: None,
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
                let config = queue::consumer_config(
                    tenant,
                    self.ack_wait,
                    queue::UNLIMITED,
                    DeliverPolicy::All,
                );
                Ok(self.axon.create_consumer_strict(config).await?)
            }
        }
    }

    /// The next command to run: the highest-priority waiting command of the next tenant
    /// in turn that has one. None when no tenant has work now.
    pub async fn next(&mut self) -> Option<Message> {
        self.release_stale().await;
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
                if queue.held.is_empty() {
                    queue.held_since = None;
                }
                self.turn.push_back(tenant);
                return Some(waiting.message);
            }
            queue.in_turn = false;
        }
        None
    }

    /// How long a command may be held before its ack wait is restarted or it is handed
    /// back: well inside the ack wait.
    pub fn max_hold(&self) -> Duration {
        (self.ack_wait / 3).min(Duration::from_secs(2))
    }

    /// Whether commands are taken but not running.
    pub fn holds(&self) -> bool {
        self.queues.values().any(|q| !q.held.is_empty())
    }

    /// Hands back the commands held longer than [`Fair::max_hold`] (no slot freed for them
    /// in time), so another worker may run them. Looks at most twice per `max_hold`.
    pub async fn release_stale(&mut self) {
        let max_hold = self.max_hold();
        if self.checked.elapsed() < max_hold / 2 {
            return;
        }
        self.checked = Instant::now();
        for queue in self.queues.values_mut() {
            if queue.held_since.is_some_and(|at| at.elapsed() >= max_hold) {
                queue.hand_back().await;
            }
        }
    }

    /// Hands every held command back (shutdown).
    pub async fn release(&mut self) {
        for queue in self.queues.values_mut() {
            queue.hand_back().await;
        }
    }

    /// Drops a tenant whose consumer failed: its commands go back, and hearing of it
    /// again makes the consumer again.
    async fn forget(&mut self, tenant: TenantId) {
        if let Some(mut queue) = self.queues.remove(&tenant) {
            queue.hand_back().await;
        }
    }
}

/// Takes up to `wanted` commands waiting now, no more than the consumer may have unacked.
/// The request never waits: a request with an expiry waits that long when nothing is
/// waiting, and the worker's loop (every tenant's turn) with it; with commands held, each
/// pop waited so (seen in the benchmark: a tail of tasks started 200 ms apart). A start
/// heard before JetStream stored it is taken when its tenant is heard of again
/// (`tenants::AGAIN`).
async fn take(queue: &mut Queue, wanted: usize) -> Result<(), async_nats::Error> {
    let info = queue.consumer.info().await?;
    let most = usize::try_from(info.config.max_ack_pending.max(1)).unwrap_or(usize::MAX);
    let asked = wanted.min(most.saturating_sub(info.num_ack_pending));
    if asked == 0 {
        return Ok(());
    }
    let mut batch = queue
        .consumer
        .fetch()
        .max_messages(asked)
        .messages()
        .await?;
    while let Some(message) = batch.next().await {
        let message = message?;
        let seq = message.info()?.stream_sequence;
        if queue.held.iter().any(|w| w.seq == seq) {
            continue;
        }
        let priority = queue::priority(message.headers.as_ref());
        queue.held.push(Waiting {
            priority,
            seq,
            message,
        });
        queue.held_since.get_or_insert_with(Instant::now);
    }
    Ok(())
}
