//! Cancel commands for the tasks this process runs, from one subscription to every task's
//! cancel subject, made when the worker starts: an attempt registers its task (no round
//! trip, where a subscription of its own cost two messages and a change to the server's
//! interest graph per task) before it looks for a stored cancel, so none slips between
//! the two. A cancel heard just before its task registered is kept a while and handed
//! over on registration; one lost to a reconnect is found by the attempt's periodic look
//! at the stored cancel.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use shared::ids::TaskId;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Every task's cancel subject.
const FILTER: &str = "axon.cmd.*.*.cancel";
/// How long a cancel heard for a task not running here is kept for its registration.
const KEEP: Duration = Duration::from_secs(10);
/// Unclaimed cancels kept at most.
const KEEP_MOST: usize = 1024;

#[derive(Default)]
struct Routes {
    /// The attempts listening, by task.
    watching: HashMap<TaskId, mpsc::UnboundedSender<Bytes>>,
    /// Cancels heard for tasks not registered, oldest first.
    unclaimed: VecDeque<(Instant, TaskId, Bytes)>,
}

/// Routes cancel commands to the attempts of this process.
#[derive(Clone, Default)]
pub(crate) struct Cancels {
    routes: Arc<Mutex<Routes>>,
}

/// One attempt's cancels; unregisters on drop.
pub(crate) struct Watch {
    cancels: Cancels,
    task_id: TaskId,
    heard: mpsc::UnboundedReceiver<Bytes>,
}

impl Watch {
    /// The payload of the next message on the task's cancel subject.
    pub async fn next(&mut self) -> Option<Bytes> {
        self.heard.recv().await
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.cancels.lock().watching.remove(&self.task_id);
    }
}

impl Cancels {
    /// Subscribes to every cancel subject and routes what arrives until `shutdown`.
    pub async fn listen(
        client: &async_nats::Client,
        shutdown: CancellationToken,
    ) -> Result<Self, async_nats::SubscribeError> {
        let mut subscriber = client.subscribe(FILTER).await?;
        // The server has the subscription before any attempt relies on it.
        let _ = client.flush().await;
        let cancels = Self::default();
        let routes = cancels.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    message = subscriber.next() => match message {
                        Some(message) => routes.route(&message.subject, message.payload),
                        None => return,
                    },
                    () = shutdown.cancelled() => return,
                }
            }
        });
        Ok(cancels)
    }

    /// Registers `task_id`; what its cancel subject carries from now on (and a cancel
    /// heard lately) comes to the returned watch.
    pub fn watch(&self, task_id: TaskId) -> Watch {
        let (sender, heard) = mpsc::unbounded_channel();
        let mut routes = self.lock();
        routes.unclaimed.retain(|(_, task, payload)| {
            let ours = *task == task_id;
            if ours {
                let _ = sender.send(payload.clone());
            }
            !ours
        });
        routes.watching.insert(task_id, sender);
        Watch {
            cancels: self.clone(),
            task_id,
            heard,
        }
    }

    /// Hands a message to the attempt of the task its subject names (which obeys it only
    /// if it is that task's cancel command).
    fn route(&self, subject: &str, payload: Bytes) {
        let Some(task_id) = subject
            .split('.')
            .nth(3)
            .and_then(|task| task.parse().ok())
            .map(TaskId)
        else {
            return;
        };
        let mut routes = self.lock();
        if let Some(watching) = routes.watching.get(&task_id) {
            let _ = watching.send(payload);
            return;
        }
        let now = Instant::now();
        while routes
            .unclaimed
            .front()
            .is_some_and(|(at, _, _)| now.duration_since(*at) > KEEP)
            || routes.unclaimed.len() >= KEEP_MOST
        {
            routes.unclaimed.pop_front();
        }
        routes.unclaimed.push_back((now, task_id, payload));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Routes> {
        self.routes.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
