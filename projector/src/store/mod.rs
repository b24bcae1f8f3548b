//! Postgres for the projector: its offsets, task rows, and one transaction per batch that
//! writes `task_events`, `tasks`, usage counters ([`usage`]), receipts and tree nodes
//! ([`audit`]) and the offsets together.

mod audit;
mod usage;

use chrono::{DateTime, Utc};
use serde_json::Value;
use shared::events::wire::Envelope;
use shared::ids::{TaskId, TenantId};
use shared::task::{Task, TaskState};
use sqlx::{PgPool, Row};
use uuid::Uuid;

use crate::projection::Projection;
use crate::transparency::Staged;

pub use audit::{frontiers, store_heads, unsigned_trees};

/// The offsets row's key.
const CONSUMER: &str = "projector";

/// Where the projector is in stream `AXON`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offsets {
    /// Last AXON sequence whose events are in `task_events`.
    pub applied: u64,
    /// Last AXON sequence whose events are also in Redis and `AXON_LOG`.
    pub fanned: u64,
}

/// A Postgres failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database failed.
    #[error("postgres: {0}")]
    Db(#[from] sqlx::Error),
    /// Writing receipts or tree nodes failed. Never a reason to skip the batch's message
    /// (that would drop a terminal event): it is retried.
    #[error("writing receipts: {0}")]
    Audit(sqlx::Error),
    /// Signing receipts failed (the signing thread stopped).
    #[error("signing receipts: {0}")]
    Signing(String),
    /// A tenant's tree lacks nodes its size needs (the log was tampered with).
    /// What it says names the tenant and what to do.
    #[error("{0}")]
    MissingNodes(String),
    /// Another projector moved the offsets; this one must reload.
    #[error("the offsets moved from {expected} to {found}: another projector is running")]
    OffsetMoved {
        /// What this projector last wrote.
        expected: u64,
        /// What is stored.
        found: u64,
    },
}

impl Error {
    /// Whether Postgres refused the data itself (SQLSTATE classes 22, data exception, and
    /// 23, constraint violation): writing it again fails again, unlike a lost connection.
    pub fn is_refusal(&self) -> bool {
        match self {
            Self::Db(sqlx::Error::Database(e)) => e
                .code()
                .is_some_and(|code| code.starts_with("22") || code.starts_with("23")),
            _ => false,
        }
    }
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn to_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or_default()
}

/// Reads the offsets, creating the row at zero on first start.
pub async fn offsets(pool: &PgPool) -> Result<Offsets, Error> {
    sqlx::query(
        "INSERT INTO projector_offsets (consumer, applied_seq, fanned_seq) VALUES ($1, 0, 0)
         ON CONFLICT (consumer) DO NOTHING",
    )
    .bind(CONSUMER)
    .execute(pool)
    .await?;
    let (applied, fanned): (i64, i64) =
        sqlx::query_as("SELECT applied_seq, fanned_seq FROM projector_offsets WHERE consumer = $1")
            .bind(CONSUMER)
            .fetch_one(pool)
            .await?;
    Ok(Offsets {
        applied: to_u64(applied),
        fanned: to_u64(fanned),
    })
}

/// The creation time of the stream the offsets belong to, if recorded.
pub async fn stream_created(pool: &PgPool) -> Result<Option<String>, Error> {
    let created: Option<(Option<String>,)> =
        sqlx::query_as("SELECT stream_created FROM projector_offsets WHERE consumer = $1")
            .bind(CONSUMER)
            .fetch_optional(pool)
            .await?;
    Ok(created.and_then(|(created,)| created))
}

/// Records which stream the offsets belong to (once, when none is recorded).
pub async fn record_stream(pool: &PgPool, created: &str) -> Result<(), Error> {
    sqlx::query(
        "UPDATE projector_offsets SET stream_created = $2
         WHERE consumer = $1 AND stream_created IS NULL",
    )
    .bind(CONSUMER)
    .bind(created)
    .execute(pool)
    .await?;
    Ok(())
}

/// Loads the projections of the given tasks (those that exist).
pub async fn projections(
    pool: &PgPool,
    keys: &[(TenantId, TaskId)],
) -> Result<Vec<Projection>, Error> {
    let tenants: Vec<Uuid> = keys.iter().map(|(tenant, _)| tenant.0).collect();
    let tasks: Vec<Uuid> = keys.iter().map(|(_, task)| task.0).collect();
    let rows = sqlx::query(
        "SELECT t.task_id, t.tenant_id, t.name, t.adapter, t.args, t.timeout_s, t.idempotency_key,
                t.state, t.attempt, t.cancel_requested, t.created_at, t.started_at, t.ended_at,
                t.last_seq, t.last_hash, t.outcome
         FROM tasks t JOIN UNNEST($1::uuid[], $2::uuid[]) AS k(tenant_id, task_id)
           ON t.tenant_id = k.tenant_id AND t.task_id = k.task_id",
    )
    .bind(tenants)
    .bind(tasks)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            let state: String = row.try_get("state")?;
            Ok(Projection {
                task_id: TaskId(row.try_get("task_id")?),
                tenant_id: TenantId(row.try_get("tenant_id")?),
                task: Task {
                    state: TaskState::parse(&state),
                    attempt: u32::try_from(row.try_get::<i32, _>("attempt")?).unwrap_or_default(),
                    cancel_requested: row.try_get("cancel_requested")?,
                },
                last_seq: to_u64(row.try_get("last_seq")?),
                last_hash: row.try_get("last_hash")?,
                name: row.try_get("name")?,
                adapter: row.try_get("adapter")?,
                args: row.try_get("args")?,
                timeout_s: row
                    .try_get::<Option<i32>, _>("timeout_s")?
                    .and_then(|t| u32::try_from(t).ok()),
                idempotency_key: row.try_get("idempotency_key")?,
                created_at: row.try_get("created_at")?,
                started_at: row.try_get("started_at")?,
                ended_at: row.try_get("ended_at")?,
                outcome: row.try_get("outcome")?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(Error::from)
}

/// What one batch writes.
#[derive(Debug, Default)]
pub struct Batch {
    /// New log events, each with the AXON sequence it came from.
    pub events: Vec<(Envelope, u64)>,
    /// The final state of every task the batch touched.
    pub tasks: Vec<Projection>,
}

/// Writes a batch, its receipts and heads (`audit`, awaited after the events are written)
/// and moves the offsets from `from` to `to`, in one transaction; returns what `audit`
/// gave. Fails with [`Error::OffsetMoved`] if the stored offset is not `from.applied`.
pub async fn commit(
    pool: &PgPool,
    batch: &Batch,
    audit: impl Future<Output = Result<Staged, Error>>,
    from: Offsets,
    to: Offsets,
) -> Result<Staged, Error> {
    let mut tx = pool.begin().await?;
    let (stored,): (i64,) =
        sqlx::query_as("SELECT applied_seq FROM projector_offsets WHERE consumer = $1 FOR UPDATE")
            .bind(CONSUMER)
            .fetch_one(&mut *tx)
            .await?;
    if to_u64(stored) != from.applied {
        return Err(Error::OffsetMoved {
            expected: from.applied,
            found: to_u64(stored),
        });
    }
    if !batch.events.is_empty() {
        insert_events(&mut tx, &batch.events).await?;
    }
    if !batch.tasks.is_empty() {
        upsert_tasks(&mut tx, &batch.tasks).await?;
    }
    if !batch.events.is_empty() {
        usage::add(&mut tx, batch).await?;
    }
    let signing = std::time::Instant::now();
    let staged = audit.await?;
    let writing = std::time::Instant::now();
    if staged.is_empty() {
        sqlx::query(
            "UPDATE projector_offsets SET applied_seq = $2, fanned_seq = $3 WHERE consumer = $1",
        )
        .bind(CONSUMER)
        .bind(to_i64(to.applied))
        .bind(to_i64(to.fanned))
        .execute(&mut *tx)
        .await?;
        metrics::histogram!("axon_projector_offsets_seconds")
            .record(writing.elapsed().as_secs_f64());
    } else {
        // The receipts' rows go with the offsets, in one statement (no round trip of their
        // own).
        crate::record_audit_time("sign", signing);
        audit::write(&mut tx, &staged, CONSUMER, to)
            .await
            .map_err(Error::Audit)?;
        crate::record_audit_time("write", writing);
    }
    tx.commit().await?;
    Ok(staged)
}

async fn insert_events(
    tx: &mut sqlx::PgConnection,
    events: &[(Envelope, u64)],
) -> Result<(), sqlx::Error> {
    let mut cols = EventColumns::default();
    for (e, stream_seq) in events {
        cols.task_id.push(e.task_id.0);
        cols.seq.push(to_i64(e.seq));
        cols.tenant_id.push(e.tenant_id.0);
        cols.ts.push(e.ts.clone());
        cols.kind.push(e.kind.as_str().to_owned());
        cols.payload.push(e.payload.clone());
        cols.hash_prev.push(e.hash_prev.clone());
        cols.hash_curr.push(e.hash_curr.clone());
        cols.stream_seq.push(to_i64(*stream_seq));
    }
    sqlx::query(
        "INSERT INTO task_events (task_id, seq, tenant_id, ts, kind, payload, hash_prev, hash_curr, stream_seq)
         SELECT * FROM UNNEST($1::uuid[], $2::bigint[], $3::uuid[], $4::text[], $5::text[],
                              $6::jsonb[], $7::text[], $8::text[], $9::bigint[])",
    )
    .bind(cols.task_id)
    .bind(cols.seq)
    .bind(cols.tenant_id)
    .bind(cols.ts)
    .bind(cols.kind)
    .bind(cols.payload)
    .bind(cols.hash_prev)
    .bind(cols.hash_curr)
    .bind(cols.stream_seq)
    .execute(tx)
    .await?;
    Ok(())
}

#[derive(Default)]
struct EventColumns {
    task_id: Vec<Uuid>,
    seq: Vec<i64>,
    tenant_id: Vec<Uuid>,
    ts: Vec<String>,
    kind: Vec<String>,
    payload: Vec<Value>,
    hash_prev: Vec<String>,
    hash_curr: Vec<String>,
    stream_seq: Vec<i64>,
}

async fn upsert_tasks(
    tx: &mut sqlx::PgConnection,
    tasks: &[Projection],
) -> Result<(), sqlx::Error> {
    let mut cols = TaskColumns::default();
    for t in tasks {
        cols.task_id.push(t.task_id.0);
        cols.tenant_id.push(t.tenant_id.0);
        cols.name.push(t.name.clone());
        cols.adapter.push(t.adapter.clone());
        cols.args.push(t.args.clone());
        cols.timeout_s
            .push(t.timeout_s.and_then(|s| i32::try_from(s).ok()));
        cols.idempotency_key.push(t.idempotency_key.clone());
        cols.state.push(
            t.task
                .state
                .unwrap_or(TaskState::Pending)
                .as_str()
                .to_owned(),
        );
        cols.attempt
            .push(i32::try_from(t.task.attempt).unwrap_or(i32::MAX));
        cols.cancel_requested.push(t.task.cancel_requested);
        cols.created_at.push(t.created_at);
        cols.started_at.push(t.started_at);
        cols.ended_at.push(t.ended_at);
        cols.last_seq.push(to_i64(t.last_seq));
        cols.last_hash.push(t.last_hash.clone());
        cols.outcome.push(t.outcome.clone());
    }
    sqlx::query(
        "INSERT INTO tasks (task_id, tenant_id, name, adapter, args, timeout_s, idempotency_key, state,
                            attempt, cancel_requested, created_at, started_at, ended_at, last_seq,
                            last_hash, outcome)
         SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::jsonb[], $6::int[],
                              $7::text[], $8::text[], $9::int[], $10::bool[], $11::timestamptz[],
                              $12::timestamptz[], $13::timestamptz[], $14::bigint[], $15::text[],
                              $16::jsonb[])
         ON CONFLICT (task_id) DO UPDATE SET
             state = EXCLUDED.state, attempt = EXCLUDED.attempt,
             cancel_requested = EXCLUDED.cancel_requested, started_at = EXCLUDED.started_at,
             ended_at = EXCLUDED.ended_at, last_seq = EXCLUDED.last_seq,
             last_hash = EXCLUDED.last_hash, outcome = EXCLUDED.outcome",
    )
    .bind(cols.task_id)
    .bind(cols.tenant_id)
    .bind(cols.name)
    .bind(cols.adapter)
    .bind(cols.args)
    .bind(cols.timeout_s)
    .bind(cols.idempotency_key)
    .bind(cols.state)
    .bind(cols.attempt)
    .bind(cols.cancel_requested)
    .bind(cols.created_at)
    .bind(cols.started_at)
    .bind(cols.ended_at)
    .bind(cols.last_seq)
    .bind(cols.last_hash)
    .bind(cols.outcome)
    .execute(tx)
    .await?;
    Ok(())
}

#[derive(Default)]
struct TaskColumns {
    task_id: Vec<Uuid>,
    tenant_id: Vec<Uuid>,
    name: Vec<String>,
    adapter: Vec<String>,
    args: Vec<Value>,
    timeout_s: Vec<Option<i32>>,
    idempotency_key: Vec<Option<String>>,
    state: Vec<String>,
    attempt: Vec<i32>,
    cancel_requested: Vec<bool>,
    created_at: Vec<DateTime<Utc>>,
    started_at: Vec<Option<DateTime<Utc>>>,
    ended_at: Vec<Option<DateTime<Utc>>>,
    last_seq: Vec<i64>,
    last_hash: Vec<String>,
    outcome: Vec<Option<Value>>,
}

/// The events that came from AXON sequences in `(after, upto]`, in log order: what a
/// crashed projector committed but may not have fanned out.
pub async fn events_between(pool: &PgPool, after: u64, upto: u64) -> Result<Vec<Envelope>, Error> {
    let rows = sqlx::query(
        "SELECT task_id, tenant_id, seq, ts, kind, payload, hash_prev, hash_curr FROM task_events
         WHERE stream_seq > $1 AND stream_seq <= $2 ORDER BY stream_seq, task_id, seq",
    )
    .bind(to_i64(after))
    .bind(to_i64(upto))
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(shared::db::envelope_from_row)
        .collect::<Result<_, _>>()
        .map_err(Error::from)
}
