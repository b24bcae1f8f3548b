//! Following one task's log for one SSE client: backfill from the stores, then live
//! events from the hub, with no gap and no duplicate at the seam. The response body polls
//! [`Follower::next_event`] directly (no task or channel per client).
//!
//! Invariant: an event is handed out only if its `seq` is the next one expected; a gap
//! before a live event is filled from the stores first.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use shared::ids::{TaskId, TenantId};
use tokio::sync::broadcast::error::RecvError;
use tokio::time::{Interval, MissedTickBehavior};

use crate::State;
use crate::hub::Subscription;
use crate::log::Logged;

/// Events read from the stores per round trip.
const PAGE: usize = 1000;
/// How often a client checks the hub, and polls the stores while the hub cannot read Redis.
const POLL: Duration = Duration::from_secs(1);

/// One client's position in one task's log.
pub struct Follower {
    state: State,
    tenant: TenantId,
    task: TaskId,
    subscription: Subscription,
    /// The `seq` of the next event to queue.
    next: u64,
    /// Events read but not yet handed out, in order.
    queued: VecDeque<Arc<Logged>>,
    /// A live event waiting for the gap before it to be filled.
    held: Option<Arc<Logged>>,
    /// Whether the backfill is over and the hub is positioned.
    live: bool,
    /// Whether the terminal event was handed out (or the stores failed).
    done: bool,
    /// The highest `seq` the hub has shown this client.
    seen: u64,
    poll: Interval,
}

impl Follower {
    /// Follows `task` from after `from`; `subscription` must be taken before any read.
    pub fn new(
        state: State,
        tenant: TenantId,
        task: TaskId,
        from: u64,
        subscription: Subscription,
    ) -> Self {
        let mut poll = tokio::time::interval(POLL);
        poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Self {
            state,
            tenant,
            task,
            subscription,
            next: from + 1,
            queued: VecDeque::new(),
            held: None,
            live: false,
            done: false,
            seen: 0,
            poll,
        }
    }

    /// The next event, or `None` after the terminal event.
    pub async fn next_event(&mut self) -> Option<Arc<Logged>> {
        loop {
            if let Some(event) = self.queued.pop_front() {
                self.done = event.event.kind.is_terminal();
                return Some(event);
            }
            if self.done {
                return None;
            }
            let step = if !self.live {
                self.backfill().await
            } else if let Some(held) = self.held.take() {
                self.release(held).await
            } else {
                self.receive().await
            };
            if let Err(e) = step {
                tracing::warn!(task = %self.task, error = %e, "SSE stream ended early");
                return None;
            }
        }
    }

    /// One page of backfill; once the stores have nothing more, goes live.
    async fn backfill(&mut self) -> Result<(), crate::log::Error> {
        if self.read_page(None).await? == 0 {
            self.subscription.follow_from(self.next - 1);
            self.live = true;
        }
        Ok(())
    }

    /// Queues a live event, after filling any gap before it from the stores.
    async fn release(&mut self, held: Arc<Logged>) -> Result<(), crate::log::Error> {
        let seq = held.event.seq;
        if seq > self.next && self.read_page(Some(seq)).await? > 0 {
            self.held = Some(held);
        } else if seq == self.next {
            self.queue(held);
        }
        // Otherwise it was already handed out, or the stores lack the gap for now: the
        // next poll or live event reads on from `next`.
        Ok(())
    }

    /// Waits for a live event; every [`POLL`] reads the stores instead if the hub cannot
    /// read Redis, showed an event this client has not got yet, or found the task's Redis
    /// stream gone (evicted or flushed).
    async fn receive(&mut self) -> Result<(), crate::log::Error> {
        let received = tokio::select! {
            received = self.subscription.receiver.recv() => received,
            _ = self.poll.tick() => {
                if self.state.hub.healthy() && !self.subscription.vanished() && self.seen < self.next {
                    return Ok(());
                }
                Err(RecvError::Lagged(0))
            }
        };
        match received {
            Ok(event) if event.event.seq < self.next => {}
            Ok(event) => {
                self.seen = self.seen.max(event.event.seq);
                self.held = Some(event);
            }
            // Fell behind the hub (or it is down): read on from the stores.
            Err(RecvError::Lagged(_)) => {
                self.read_page(None).await?;
            }
            Err(RecvError::Closed) => self.done = true,
        }
        Ok(())
    }

    /// Queues the stored events from `next` on (before `until`, if given), one page.
    async fn read_page(&mut self, until: Option<u64>) -> Result<usize, crate::log::Error> {
        let page = self
            .state
            .log
            .read(self.tenant, self.task, self.next - 1, PAGE)
            .await?;
        let before = self.queued.len();
        for event in page {
            if until.is_some_and(|until| event.event.seq >= until) || event.event.seq != self.next {
                break;
            }
            self.queue(event);
        }
        Ok(self.queued.len() - before)
    }

    fn queue(&mut self, event: Arc<Logged>) {
        self.next = event.event.seq + 1;
        self.queued.push_back(event);
    }
}
