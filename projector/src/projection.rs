//! The per-task projection: the aggregate plus what the read model and the chain need.
//! Applying an input emits sealed envelopes with the next `seq` and chain link.

use chrono::{DateTime, Utc};
use serde_json::Value;
use shared::chain::{self, Unsealed};
use shared::events::TaskEvent;
use shared::events::wire::Envelope;
use shared::ids::{TaskId, TenantId};
use shared::task::{self, Task, TaskCommand};

use crate::decode::Input;

/// One task as the projector keeps it (and as `tasks` stores it).
#[derive(Debug, Clone)]
pub struct Projection {
    /// The task.
    pub task_id: TaskId,
    /// Its tenant.
    pub tenant_id: TenantId,
    /// The state machine.
    pub task: Task,
    /// The last logged `seq` (0 before the first).
    pub last_seq: u64,
    /// The last logged `hash_curr`.
    pub last_hash: String,
    /// From the start command.
    pub name: String,
    /// From the start command.
    pub adapter: String,
    /// From the start command.
    pub args: Value,
    /// From the start command.
    pub timeout_s: Option<u32>,
    /// From the start command.
    pub idempotency_key: Option<String>,
    /// When the task was requested.
    pub created_at: DateTime<Utc>,
    /// When the first attempt started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it ended.
    pub ended_at: Option<DateTime<Utc>>,
    /// The terminal event's payload.
    pub outcome: Option<Value>,
}

/// Why an input changes nothing.
#[derive(Debug, thiserror::Error)]
pub enum Rejected {
    /// The state machine refused it (a stale attempt, a report after the end, …).
    #[error(transparent)]
    Task(#[from] task::Error),
    /// Its payload cannot be hashed.
    #[error(transparent)]
    Chain(#[from] chain::Error),
}

impl Projection {
    /// A projection for a task about to be requested.
    pub fn requested(input: &Input) -> Option<Self> {
        let TaskCommand::Request {
            name,
            adapter,
            args,
            timeout_s,
        } = &input.command
        else {
            return None;
        };
        Some(Self {
            task_id: input.task_id,
            tenant_id: input.tenant_id,
            task: Task::default(),
            last_seq: 0,
            last_hash: chain::GENESIS.to_owned(),
            name: name.clone(),
            adapter: adapter.clone(),
            args: args.clone(),
            timeout_s: *timeout_s,
            idempotency_key: input.idempotency_key.clone(),
            created_at: shared::time::parse_ts(&input.ts).unwrap_or_else(Utc::now),
            started_at: None,
            ended_at: None,
            outcome: None,
        })
    }

    /// Applies an input; on rejection the projection is unchanged.
    pub async fn apply(&mut self, input: Input) -> Result<Vec<Envelope>, Rejected> {
        let mut task = self.task.clone();
        let events = task::execute(&mut task, input.command).await?;
        let mut sealed = Vec::with_capacity(events.len());
        let mut hash_prev = self.last_hash.clone();
        for event in &events {
            let envelope = Unsealed {
                task_id: self.task_id,
                tenant_id: self.tenant_id,
                seq: self.last_seq + 1 + sealed.len() as u64,
                ts: input.ts.clone(),
                kind: event.kind(),
                payload: event.payload(),
                hash_prev,
            }
            .seal()?;
            hash_prev = envelope.hash_curr.clone();
            sealed.push(envelope);
        }
        let at = shared::time::parse_ts(&input.ts).unwrap_or_else(Utc::now);
        for event in &events {
            if let TaskEvent::Started { .. } = event {
                self.started_at.get_or_insert(at);
            } else if event.kind().is_terminal() {
                self.ended_at = Some(at);
                self.outcome = Some(event.payload());
            }
        }
        self.task = task;
        self.last_seq += sealed.len() as u64;
        self.last_hash = hash_prev;
        Ok(sealed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn input(task_id: TaskId, tenant_id: TenantId, command: TaskCommand) -> Input {
        Input {
            task_id,
            tenant_id,
            ts: "2026-11-27T07:19:16.123456Z".into(),
            command,
            idempotency_key: None,
        }
    }

    #[tokio::test]
    async fn chains_events_and_rolls_back_rejections() {
        let (task, tenant) = (TaskId::new(), TenantId(uuid::Uuid::now_v7()));
        let request = input(
            task,
            tenant,
            TaskCommand::Request {
                name: "n".into(),
                adapter: "mock".into(),
                args: json!({}),
                timeout_s: None,
            },
        );
        let mut projection = Projection::requested(&request).expect("a request");
        let first = projection.apply(request).await.expect("accepted");
        let cancel = projection
            .apply(input(task, tenant, TaskCommand::Cancel))
            .await
            .expect("accepted");
        let all: Vec<Envelope> = first.into_iter().chain(cancel).collect();
        assert_eq!(all.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2, 3]);
        assert_eq!(chain::verify(&all), Ok(()));
        assert!(projection.ended_at.is_some());

        let late = input(task, tenant, TaskCommand::Cancel);
        assert!(projection.apply(late).await.is_err());
        assert_eq!(projection.last_seq, 3);
    }
}
