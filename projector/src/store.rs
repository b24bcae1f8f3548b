//! Postgres for the projector: its offsets, task rows, and one transaction per batch that
//! writes `task_events`, `tasks` and the offsets together.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use shared::audit::merkle::{Frontier, Hash, NodeId};
use shared::audit::signed::SignedHead;
use serde_json::Value;
use shared::events::wire::Envelope;
use shared::ids::{TaskId, TenantId};
use shared::task::{Task, TaskState};
use sqlx::{PgPool, Row};
use uuid::Uuid;

use crate::projection::Projection;
use crate::transparency::Staged;

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
    /// A tenant's tree lacks nodes its size needs (the log was tampered with).
    #[error("the log of tenant {0} lacks nodes its size needs; restore log_nodes from a backup")]
    MissingNodes(TenantId),
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
    /// Receipts, tree nodes and heads.
    pub audit: Staged,
}

/// Writes a batch and moves the offsets from `from` to `to`, in one transaction. Fails
/// with [`Error::OffsetMoved`] if the stored offset is not `from.applied`.
pub async fn commit(pool: &PgPool, batch: &Batch, from: Offsets, to: Offsets) -> Result<(), Error> {
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
    if !batch.audit.is_empty() {
        write_audit(&mut tx, &batch.audit).await?;
    }
    sqlx::query(
        "UPDATE projector_offsets SET applied_seq = $2, fanned_seq = $3 WHERE consumer = $1",
    )
    .bind(CONSUMER)
    .bind(to_i64(to.applied))
    .bind(to_i64(to.fanned))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
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

/// Writes receipts, tree nodes, tree sizes and heads (heads already stored are kept).
pub async fn write_audit(tx: &mut sqlx::PgConnection, staged: &Staged) -> Result<(), sqlx::Error> {
    if !staged.receipts.is_empty() {
        let mut cols = ReceiptColumns::default();
        for (signed, leaf) in &staged.receipts {
            let r = &signed.receipt;
            cols.task_id.push(r.task_id.0);
            cols.tenant_id.push(r.tenant_id.0);
            cols.leaf_index.push(to_i64(*leaf));
            cols.state.push(r.state.clone());
            cols.last_seq.push(to_i64(r.last_seq));
            cols.hash_curr.push(r.hash_curr.clone());
            cols.issued_at.push(r.issued_at.clone());
            cols.key_id.push(r.key_id.clone());
            cols.signature.push(signed.signature.clone());
        }
        sqlx::query(
            "INSERT INTO task_receipts (task_id, tenant_id, leaf_index, state, last_seq, hash_curr,
                                        issued_at, key_id, signature)
             SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::bigint[], $4::text[], $5::bigint[],
                                  $6::text[], $7::text[], $8::text[], $9::text[])",
        )
        .bind(cols.task_id)
        .bind(cols.tenant_id)
        .bind(cols.leaf_index)
        .bind(cols.state)
        .bind(cols.last_seq)
        .bind(cols.hash_curr)
        .bind(cols.issued_at)
        .bind(cols.key_id)
        .bind(cols.signature)
        .execute(&mut *tx)
        .await?;
        let (tenants, levels, indexes, hashes): (Vec<Uuid>, Vec<i16>, Vec<i64>, Vec<Vec<u8>>) =
            staged
                .nodes
                .iter()
                .map(|(tenant, (level, idx), hash)| {
                    (tenant.0, i16::try_from(*level).unwrap_or(i16::MAX), to_i64(*idx), hash.to_vec())
                })
                .fold(Default::default(), |mut cols, (t, l, i, h)| {
                    cols.0.push(t);
                    cols.1.push(l);
                    cols.2.push(i);
                    cols.3.push(h);
                    cols
                });
        sqlx::query(
            "INSERT INTO log_nodes (tenant_id, level, idx, hash)
             SELECT * FROM UNNEST($1::uuid[], $2::smallint[], $3::bigint[], $4::bytea[])",
        )
        .bind(tenants)
        .bind(levels)
        .bind(indexes)
        .bind(hashes)
        .execute(&mut *tx)
        .await?;
        let (tenants, sizes): (Vec<Uuid>, Vec<i64>) = staged
            .trees
            .iter()
            .map(|(tenant, tree)| (tenant.0, to_i64(tree.size)))
            .unzip();
        sqlx::query(
            "INSERT INTO log_trees (tenant_id, tree_size)
             SELECT * FROM UNNEST($1::uuid[], $2::bigint[])
             ON CONFLICT (tenant_id) DO UPDATE SET tree_size = EXCLUDED.tree_size",
        )
        .bind(tenants)
        .bind(sizes)
        .execute(&mut *tx)
        .await?;
    }
    if !staged.heads.is_empty() {
        insert_heads(tx, &staged.heads).await?;
    }
    Ok(())
}

#[derive(Default)]
struct ReceiptColumns {
    task_id: Vec<Uuid>,
    tenant_id: Vec<Uuid>,
    leaf_index: Vec<i64>,
    state: Vec<String>,
    last_seq: Vec<i64>,
    hash_curr: Vec<String>,
    issued_at: Vec<String>,
    key_id: Vec<String>,
    signature: Vec<String>,
}

async fn insert_heads(tx: &mut sqlx::PgConnection, heads: &[SignedHead]) -> Result<(), sqlx::Error> {
    let mut cols: (Vec<Uuid>, Vec<i64>, Vec<String>, Vec<String>, Vec<String>, Vec<String>) =
        Default::default();
    for signed in heads {
        let h = &signed.head;
        cols.0.push(h.tenant_id.0);
        cols.1.push(to_i64(h.tree_size));
        cols.2.push(h.root_hash.clone());
        cols.3.push(h.issued_at.clone());
        cols.4.push(h.key_id.clone());
        cols.5.push(signed.signature.clone());
    }
    sqlx::query(
        "INSERT INTO log_heads (tenant_id, tree_size, root_hash, issued_at, key_id, signature)
         SELECT * FROM UNNEST($1::uuid[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[])
         ON CONFLICT (tenant_id, tree_size) DO NOTHING",
    )
    .bind(cols.0)
    .bind(cols.1)
    .bind(cols.2)
    .bind(cols.3)
    .bind(cols.4)
    .bind(cols.5)
    .execute(tx)
    .await?;
    Ok(())
}

/// Stores heads signed outside a batch (held back, or missing after a crash).
pub async fn store_heads(pool: &PgPool, heads: &[SignedHead]) -> Result<(), Error> {
    let mut conn = pool.acquire().await?;
    insert_heads(&mut conn, heads).await?;
    Ok(())
}

/// Tenants whose trees have leaves newer than their latest head.
pub async fn unsigned_trees(pool: &PgPool) -> Result<Vec<TenantId>, Error> {
    let rows: Vec<(Uuid,)> = sqlx::query_as(
        "SELECT t.tenant_id FROM log_trees t
         WHERE t.tree_size > COALESCE(
             (SELECT max(h.tree_size) FROM log_heads h WHERE h.tenant_id = t.tenant_id), 0)",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|(t,)| TenantId(t)).collect())
}

/// The current trees of `tenants` (empty ones for tenants without a log yet).
pub async fn frontiers(
    pool: &PgPool,
    tenants: &[TenantId],
) -> Result<HashMap<TenantId, Frontier>, Error> {
    let ids: Vec<Uuid> = tenants.iter().map(|t| t.0).collect();
    let sizes: Vec<(Uuid, i64)> = sqlx::query_as(
        "SELECT tenant_id, tree_size FROM log_trees WHERE tenant_id = ANY($1)",
    )
    .bind(&ids)
    .fetch_all(pool)
    .await?;
    let mut wanted = (Vec::new(), Vec::new(), Vec::new());
    for (tenant, size) in &sizes {
        for (level, idx) in Frontier::ids(to_u64(*size)) {
            wanted.0.push(*tenant);
            wanted.1.push(i16::try_from(level).unwrap_or(i16::MAX));
            wanted.2.push(to_i64(idx));
        }
    }
    let rows: Vec<(Uuid, i16, i64, Vec<u8>)> = sqlx::query_as(
        "SELECT n.tenant_id, n.level, n.idx, n.hash FROM log_nodes n
         JOIN UNNEST($1::uuid[], $2::smallint[], $3::bigint[]) AS k(tenant_id, level, idx)
           ON n.tenant_id = k.tenant_id AND n.level = k.level AND n.idx = k.idx",
    )
    .bind(wanted.0)
    .bind(wanted.1)
    .bind(wanted.2)
    .fetch_all(pool)
    .await?;
    let mut nodes: HashMap<Uuid, HashMap<NodeId, Hash>> = HashMap::new();
    for (tenant, level, idx, hash) in rows {
        if let Ok(hash) = Hash::try_from(hash) {
            nodes
                .entry(tenant)
                .or_default()
                .insert((u32::try_from(level).unwrap_or_default(), to_u64(idx)), hash);
        }
    }
    let mut trees: HashMap<TenantId, Frontier> =
        tenants.iter().map(|t| (*t, Frontier::default())).collect();
    for (tenant, size) in sizes {
        let loaded = Frontier::load(to_u64(size), &nodes.remove(&tenant).unwrap_or_default())
            .ok_or(Error::MissingNodes(TenantId(tenant)))?;
        trees.insert(TenantId(tenant), loaded);
    }
    Ok(trees)
}
