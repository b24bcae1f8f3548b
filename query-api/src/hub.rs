//! One Redis reader fanning out to many SSE clients. The reader keeps one blocking
//! `XREAD` over the streams of every task some client follows, and broadcasts each entry
//! to that task's subscribers. A client subscribes first, then backfills, then tells the
//! hub where its backfill ended ([`Subscription::follow_from`]), so no entry falls between.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use redis::aio::{ConnectionManager, MultiplexedConnection};
use redis::streams::StreamReadReply;
use redis::{AsyncConnectionConfig, Client};
use shared::ids::TaskId;
use shared::names;
use tokio::sync::{Notify, broadcast};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::log::Logged;

/// Entries a lagging client may fall behind before it re-reads from the stores.
const CHANNEL: usize = 1024;
/// How long one `XREAD` blocks.
const BLOCK_MS: u64 = 2000;
/// Entries per stream per `XREAD`.
const COUNT: usize = 1000;
/// A topic without entries this long has its stream checked for existence.
const IDLE: Duration = Duration::from_millis(BLOCK_MS);

/// A followed task.
struct Topic {
    sender: broadcast::Sender<Arc<Logged>>,
    /// The last `seq` the reader has read (None until a subscriber positions it).
    cursor: Option<u64>,
    /// When the reader last got an entry of this task (or began following it).
    active: Instant,
    /// Set while the task's Redis stream is gone (evicted or flushed): no entry will come
    /// from Redis for what it held, so clients read on from the stores.
    vanished: Arc<AtomicBool>,
    /// Subscriptions alive, counted under the lock (a receiver count would see a leaving
    /// subscription's receiver still alive, so two leaving at once could both keep it).
    clients: usize,
}

struct Inner {
    topics: Mutex<HashMap<TaskId, Topic>>,
    /// Wakes an idle reader when the first topic is positioned.
    changed: Notify,
    /// The reader's connection id, for `CLIENT UNBLOCK` when a topic is added.
    reader_id: Mutex<Option<i64>>,
    control: ConnectionManager,
    healthy: AtomicBool,
}

/// The fan-out hub of one query-api process.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

/// One client's following of one task.
pub struct Subscription {
    hub: Hub,
    task: TaskId,
    /// Live entries for the task.
    pub receiver: broadcast::Receiver<Arc<Logged>>,
    vanished: Arc<AtomicBool>,
}

impl Hub {
    /// A hub; `control` is a shared connection used to wake the reader.
    pub fn new(control: ConnectionManager) -> Self {
        Self {
            inner: Arc::new(Inner {
                topics: Mutex::new(HashMap::new()),
                changed: Notify::new(),
                reader_id: Mutex::new(None),
                control,
                healthy: AtomicBool::new(true),
            }),
        }
    }

    fn topics(&self) -> MutexGuard<'_, HashMap<TaskId, Topic>> {
        self.inner
            .topics
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether the reader's last `XREAD` worked (if not, clients poll the stores).
    pub fn healthy(&self) -> bool {
        self.inner.healthy.load(Ordering::Relaxed)
    }

    /// Starts receiving `task`'s live entries.
    pub fn subscribe(&self, task: TaskId) -> Subscription {
        let mut topics = self.topics();
        let topic = topics.entry(task).or_insert_with(|| Topic {
            sender: broadcast::channel(CHANNEL).0,
            cursor: None,
            active: Instant::now(),
            vanished: Arc::default(),
            clients: 0,
        });
        topic.clients += 1;
        let receiver = topic.sender.subscribe();
        let vanished = topic.vanished.clone();
        metrics::gauge!("axon_hub_topics").set(topics.len() as f64);
        drop(topics);
        Subscription {
            hub: self.clone(),
            task,
            receiver,
            vanished,
        }
    }

    /// Reads entries and broadcasts them until `shutdown`; reconnects after failures.
    pub async fn run(self, client: Client, shutdown: CancellationToken) {
        let config = AsyncConnectionConfig::new()
            .set_response_timeout(Some(Duration::from_millis(BLOCK_MS * 3)));
        loop {
            let result = tokio::select! {
                result = self.read_loop(&client, &config) => result,
                () = shutdown.cancelled() => return,
            };
            if let Err(e) = result {
                self.inner.healthy.store(false, Ordering::Relaxed);
                tracing::warn!(error = %e, "SSE hub lost Redis; reconnecting");
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(250)) => {}
                () = shutdown.cancelled() => return,
            }
        }
    }

    async fn read_loop(
        &self,
        client: &Client,
        config: &AsyncConnectionConfig,
    ) -> redis::RedisResult<()> {
        let mut checked = Instant::now();
        let mut conn = client
            .get_multiplexed_async_connection_with_config(config)
            .await?;
        let id: i64 = redis::cmd("CLIENT")
            .arg("ID")
            .query_async(&mut conn)
            .await?;
        *self
            .inner
            .reader_id
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(id);
        loop {
            let followed: Vec<(TaskId, u64)> = self
                .topics()
                .iter()
                .filter_map(|(task, topic)| topic.cursor.map(|c| (*task, c)))
                .collect();
            if followed.is_empty() {
                self.inner.healthy.store(true, Ordering::Relaxed);
                self.inner.changed.notified().await;
                continue;
            }
            let mut xread = redis::cmd("XREAD");
            xread
                .arg("COUNT")
                .arg(COUNT)
                .arg("BLOCK")
                .arg(BLOCK_MS)
                .arg("STREAMS");
            for (task, _) in &followed {
                xread.arg(names::events_key(*task));
            }
            for (_, cursor) in &followed {
                xread.arg(format!("{cursor}-0"));
            }
            let reply: Option<StreamReadReply> = xread.query_async(&mut conn).await?;
            self.inner.healthy.store(true, Ordering::Relaxed);
            if let Some(reply) = reply {
                self.broadcast(reply);
            }
            // At most once per IDLE, however often entries of busy topics wake the reader.
            if checked.elapsed() >= IDLE {
                self.check_idle(&mut conn).await?;
                checked = Instant::now();
            }
        }
    }

    /// Marks the topics idle for a while whose stream is gone, and clears the mark of
    /// those whose stream is back: one pipelined `EXISTS` per idle topic.
    async fn check_idle(&self, conn: &mut MultiplexedConnection) -> redis::RedisResult<()> {
        let idle: Vec<(TaskId, Arc<AtomicBool>)> = self
            .topics()
            .iter()
            .filter(|(_, topic)| topic.cursor.is_some() && topic.active.elapsed() >= IDLE)
            .map(|(task, topic)| (*task, topic.vanished.clone()))
            .collect();
        if idle.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for (task, _) in &idle {
            pipe.exists(names::events_key(*task));
        }
        let exists: Vec<bool> = pipe.query_async(conn).await?;
        for ((_, vanished), exists) in idle.iter().zip(exists) {
            vanished.store(!exists, Ordering::Relaxed);
        }
        Ok(())
    }

    fn broadcast(&self, reply: StreamReadReply) {
        let mut topics = self.topics();
        for stream in reply.keys {
            let Some(task) = stream
                .key
                .strip_prefix("events:")
                .and_then(|t| t.parse().ok())
            else {
                continue;
            };
            let Some(topic) = topics.get_mut(&task) else {
                continue;
            };
            for entry in stream.ids {
                let seq = entry
                    .id
                    .split('-')
                    .next()
                    .and_then(|s| s.parse::<u64>().ok());
                let logged = entry.get::<String>("data").and_then(Logged::parse);
                if let (Some(seq), Some(logged)) = (seq, logged) {
                    topic.cursor = Some(seq);
                    topic.active = Instant::now();
                    topic.vanished.store(false, Ordering::Relaxed);
                    // No receiver just means every client left; the topic is dropped soon.
                    let _ = topic.sender.send(logged);
                }
            }
        }
    }

    /// Makes a blocked `XREAD` return so the reader picks up a new topic.
    fn wake(&self) {
        self.inner.changed.notify_one();
        let reader = *self
            .inner
            .reader_id
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(id) = reader {
            let mut control = self.inner.control.clone();
            tokio::spawn(async move {
                let unblocked: redis::RedisResult<i64> = redis::cmd("CLIENT")
                    .arg("UNBLOCK")
                    .arg(id)
                    .query_async(&mut control)
                    .await;
                if let Err(e) = unblocked {
                    tracing::debug!(error = %e, "CLIENT UNBLOCK failed; the reader wakes at its timeout");
                }
            });
        }
    }
}

impl Subscription {
    /// Whether the task's Redis stream is gone, so live entries may not come for what the
    /// client still lacks: it should read the stores.
    pub fn vanished(&self) -> bool {
        self.vanished.load(Ordering::Relaxed)
    }

    /// Tells the hub this client has everything up to `seq`; the reader starts there if
    /// it does not follow the task yet.
    pub fn follow_from(&self, seq: u64) {
        let added = {
            let mut topics = self.hub.topics();
            match topics.get_mut(&self.task) {
                Some(topic) if topic.cursor.is_none() => {
                    topic.cursor = Some(seq);
                    true
                }
                _ => false,
            }
        };
        if added {
            self.hub.wake();
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut topics = self.hub.topics();
        if let Some(topic) = topics.get_mut(&self.task) {
            topic.clients = topic.clients.saturating_sub(1);
            if topic.clients == 0 {
                topics.remove(&self.task);
            }
        }
        metrics::gauge!("axon_hub_topics").set(topics.len() as f64);
    }
}
