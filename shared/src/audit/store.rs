//! Postgres reads of receipts, keys, heads and proofs, shared by query-api, MCP and
//! `axontask verify --database-url`. Every query filters by tenant.

use std::collections::HashMap;

use sqlx::{PgPool, Row};
use uuid::Uuid;

use super::merkle::{self, Hash, NodeId, Query};
use super::signed::{ALG, Head, Receipt, SignedHead, SignedReceipt};
use super::signer::PublicKey;
use super::verdict::{ConsistencyProof, Evidence, Inclusion, InclusionProof};
use crate::events::wire::Envelope;
use crate::ids::{TaskId, TenantId};

/// Why a proof cannot be given.
#[derive(Debug, thiserror::Error)]
pub enum ProofError {
    /// The task has no receipt (it runs, or it is not the tenant's).
    #[error("task {0} has no receipt in the log")]
    NoReceipt(TaskId),
    /// The receipt is newer than the tree asked about.
    #[error(
        "the receipt of task {task} is leaf {leaf}, which the tree of size {size} does not hold yet; ask with a larger tree_size (heads are signed within a second)"
    )]
    NotYet {
        /// The task.
        task: TaskId,
        /// Its leaf.
        leaf: u64,
        /// The tree asked about.
        size: u64,
    },
    /// Sizes out of range.
    #[error("{0}")]
    Range(String),
    /// Postgres failed.
    #[error("postgres: {0}")]
    Db(#[from] sqlx::Error),
}

fn to_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or_default()
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Registers a signing key so it is published (and stays published after rotation).
pub async fn register_key(pool: &PgPool, key: &PublicKey) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO signing_keys (key_id, public_key) VALUES ($1, $2) ON CONFLICT (key_id) DO NOTHING",
    )
    .bind(&key.kid)
    .bind(key.x())
    .execute(pool)
    .await?;
    Ok(())
}

/// Every key that signed here, then `extra` (`RECEIPT_VERIFY_KEYS`).
pub async fn published_keys(
    pool: &PgPool,
    extra: &[PublicKey],
) -> Result<Vec<PublicKey>, sqlx::Error> {
    let rows: Vec<(String,)> =
        sqlx::query_as("SELECT public_key FROM signing_keys ORDER BY created_at, key_id")
            .fetch_all(pool)
            .await?;
    let mut keys: Vec<PublicKey> = rows
        .iter()
        .filter_map(|(x,)| PublicKey::parse(x).ok())
        .collect();
    for key in extra {
        if !keys.contains(key) {
            keys.push(key.clone());
        }
    }
    Ok(keys)
}

/// The tenant's task's receipt and its leaf index.
pub async fn receipt(
    pool: &PgPool,
    tenant: TenantId,
    task: TaskId,
) -> Result<Option<(SignedReceipt, u64)>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT leaf_index, state, last_seq, hash_curr, issued_at, key_id, signature
         FROM task_receipts WHERE tenant_id = $1 AND task_id = $2",
    )
    .bind(tenant.0)
    .bind(task.0)
    .fetch_optional(pool)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let receipt = Receipt {
        task_id: task,
        tenant_id: tenant,
        state: row.try_get("state")?,
        last_seq: to_u64(row.try_get("last_seq")?),
        hash_curr: row.try_get("hash_curr")?,
        issued_at: row.try_get("issued_at")?,
        key_id: row.try_get("key_id")?,
    };
    let signed = SignedReceipt {
        receipt,
        alg: ALG.into(),
        signature: row.try_get("signature")?,
    };
    Ok(Some((signed, to_u64(row.try_get("leaf_index")?))))
}

/// The tenant's latest signed head.
pub async fn latest_head(
    pool: &PgPool,
    tenant: TenantId,
) -> Result<Option<SignedHead>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT tree_size, root_hash, issued_at, key_id, signature FROM log_heads
         WHERE tenant_id = $1 ORDER BY tree_size DESC LIMIT 1",
    )
    .bind(tenant.0)
    .fetch_optional(pool)
    .await?;
    row.map(|row| {
        Ok(SignedHead {
            head: Head {
                tenant_id: tenant,
                tree_size: to_u64(row.try_get("tree_size")?),
                root_hash: row.try_get("root_hash")?,
                issued_at: row.try_get("issued_at")?,
                key_id: row.try_get("key_id")?,
            },
            alg: ALG.into(),
            signature: row.try_get("signature")?,
        })
    })
    .transpose()
}

/// Leaves in the tenant's tree (some may be newer than its latest head).
pub async fn tree_size(pool: &PgPool, tenant: TenantId) -> Result<u64, sqlx::Error> {
    let size: Option<(i64,)> =
        sqlx::query_as("SELECT tree_size FROM log_trees WHERE tenant_id = $1")
            .bind(tenant.0)
            .fetch_optional(pool)
            .await?;
    Ok(size.map_or(0, |(n,)| to_u64(n)))
}

/// The stored nodes of the tenant's tree with the given ids (one read).
pub async fn nodes(
    pool: &PgPool,
    tenant: TenantId,
    ids: &[NodeId],
) -> Result<HashMap<NodeId, Hash>, sqlx::Error> {
    let levels: Vec<i16> = ids
        .iter()
        .map(|(l, _)| i16::try_from(*l).unwrap_or(i16::MAX))
        .collect();
    let indexes: Vec<i64> = ids.iter().map(|(_, i)| to_i64(*i)).collect();
    let rows = sqlx::query(
        "SELECT n.level, n.idx, n.hash FROM log_nodes n
         JOIN UNNEST($2::smallint[], $3::bigint[]) AS k(level, idx)
           ON n.level = k.level AND n.idx = k.idx
         WHERE n.tenant_id = $1",
    )
    .bind(tenant.0)
    .bind(levels)
    .bind(indexes)
    .fetch_all(pool)
    .await?;
    let mut nodes = HashMap::with_capacity(rows.len());
    for row in rows {
        let level: i16 = row.try_get("level")?;
        let idx: i64 = row.try_get("idx")?;
        let hash: Vec<u8> = row.try_get("hash")?;
        if let Ok(hash) = Hash::try_from(hash) {
            nodes.insert(
                (u32::try_from(level).unwrap_or_default(), to_u64(idx)),
                hash,
            );
        }
    }
    Ok(nodes)
}

async fn run(pool: &PgPool, tenant: TenantId, query: Query) -> Result<Vec<String>, sqlx::Error> {
    let nodes = nodes(pool, tenant, &merkle::needed(query)).await?;
    Ok(merkle::answer(query, &nodes)
        .iter()
        .map(hex::encode)
        .collect())
}

async fn check_size(
    pool: &PgPool,
    tenant: TenantId,
    size: u64,
    name: &str,
) -> Result<(), ProofError> {
    let leaves = tree_size(pool, tenant).await?;
    if size > leaves {
        return Err(ProofError::Range(format!(
            "{name} {size} is larger than the log ({leaves} receipts); use the tree_size of a signed head (GET /api/log/head)"
        )));
    }
    Ok(())
}

/// The inclusion proof of the task's receipt in the tree of `size` leaves.
pub async fn inclusion_proof(
    pool: &PgPool,
    tenant: TenantId,
    task: TaskId,
    size: u64,
) -> Result<InclusionProof, ProofError> {
    if size == 0 {
        return Err(ProofError::Range(
            "tree_size must be at least 1; use the tree_size of a signed head (GET /api/log/head)"
                .into(),
        ));
    }
    let (_, leaf) = receipt(pool, tenant, task)
        .await?
        .ok_or(ProofError::NoReceipt(task))?;
    if leaf >= size {
        return Err(ProofError::NotYet { task, leaf, size });
    }
    check_size(pool, tenant, size, "tree_size").await?;
    let audit_path = run(pool, tenant, Query::Inclusion { index: leaf, size }).await?;
    Ok(InclusionProof {
        leaf_index: leaf,
        tree_size: size,
        audit_path,
    })
}

/// The consistency proof from the tree of `from` leaves to the tree of `to`.
pub async fn consistency_proof(
    pool: &PgPool,
    tenant: TenantId,
    from: u64,
    to: u64,
) -> Result<ConsistencyProof, ProofError> {
    if from == 0 || from > to {
        return Err(ProofError::Range(format!(
            "need 1 <= from <= to; got from={from}, to={to}"
        )));
    }
    check_size(pool, tenant, to, "to").await?;
    let proof = run(pool, tenant, Query::Consistency { from, to }).await?;
    Ok(ConsistencyProof { from, to, proof })
}

/// The tenant a task belongs to, from its receipt, row or events.
pub async fn tenant_of(pool: &PgPool, task: TaskId) -> Result<Option<TenantId>, sqlx::Error> {
    let row: Option<(Uuid,)> = sqlx::query_as(
        "SELECT tenant_id FROM task_receipts WHERE task_id = $1
         UNION ALL SELECT tenant_id FROM tasks WHERE task_id = $1
         UNION ALL (SELECT tenant_id FROM task_events WHERE task_id = $1 LIMIT 1)
         LIMIT 1",
    )
    .bind(task.0)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|(t,)| TenantId(t)))
}

/// Every event of the tenant's task, in seq order.
pub async fn events(
    pool: &PgPool,
    tenant: TenantId,
    task: TaskId,
) -> Result<Vec<Envelope>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT task_id, tenant_id, seq, ts, kind, payload, hash_prev, hash_curr FROM task_events
         WHERE tenant_id = $1 AND task_id = $2 ORDER BY seq",
    )
    .bind(tenant.0)
    .bind(task.0)
    .fetch_all(pool)
    .await?;
    rows.iter().map(crate::db::envelope_from_row).collect()
}

/// The log half of the evidence: the latest head, the receipt's place in it, and the
/// proof from `earlier` to it.
pub async fn log_evidence(
    pool: &PgPool,
    tenant: TenantId,
    task: TaskId,
    earlier: Option<SignedHead>,
) -> Result<
    (
        Option<(SignedHead, Inclusion)>,
        Option<(SignedHead, Result<ConsistencyProof, String>)>,
    ),
    sqlx::Error,
> {
    let Some(head) = latest_head(pool, tenant).await? else {
        let none = "the tenant log has no signed head yet".to_owned();
        return Ok((None, earlier.map(|e| (e, Err(none)))));
    };
    let size = head.head.tree_size;
    let inclusion = match inclusion_proof(pool, tenant, task, size).await {
        Ok(proof) => Inclusion::Proof(proof),
        Err(e @ ProofError::NotYet { .. }) => Inclusion::NotYet(e.to_string()),
        Err(ProofError::Db(e)) => return Err(e),
        Err(e) => Inclusion::Missing(e.to_string()),
    };
    let earlier = match earlier {
        None => None,
        Some(old) => {
            let proof = consistency_proof(pool, tenant, old.head.tree_size, size).await;
            let proof = match proof {
                Err(ProofError::Db(e)) => return Err(e),
                other => other.map_err(|e| e.to_string()),
            };
            Some((old, proof))
        }
    };
    Ok((Some((head, inclusion)), earlier))
}

/// Everything Postgres holds to verify the tenant's task, with the published `keys`.
pub async fn evidence(
    pool: &PgPool,
    tenant: TenantId,
    task: TaskId,
    keys: Vec<PublicKey>,
    earlier: Option<SignedHead>,
) -> Result<Evidence, sqlx::Error> {
    let events = events(pool, tenant, task).await?;
    let receipt = receipt(pool, tenant, task).await?.map(|(r, _)| r);
    let (log, earlier) = log_evidence(pool, tenant, task, earlier).await?;
    Ok(Evidence {
        task_id: task,
        events,
        receipt,
        keys,
        log,
        earlier,
    })
}
