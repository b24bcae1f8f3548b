//! Postgres for the tenant logs: receipts, tree nodes, tree sizes and heads, and the
//! frontiers the projector appends to.

use std::collections::HashMap;

use shared::audit::merkle::{Frontier, Hash, NodeId};
use shared::audit::signed::SignedHead;
use shared::ids::TenantId;
use sqlx::PgPool;
use uuid::Uuid;

use super::{Error, Offsets, to_i64, to_u64};
use crate::transparency::Staged;

/// Writes receipts, tree nodes, tree sizes and heads (heads already stored are kept) and
/// moves `consumer`'s offsets `to`, in one statement.
pub async fn write(
    tx: &mut sqlx::PgConnection,
    staged: &Staged,
    consumer: &str,
    to: Offsets,
) -> Result<(), sqlx::Error> {
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
    let mut nodes = NodeColumns::default();
    for (tenant, (level, idx), hash) in &staged.nodes {
        nodes.tenant_id.push(tenant.0);
        nodes.level.push(i16::try_from(*level).unwrap_or(i16::MAX));
        nodes.idx.push(to_i64(*idx));
        nodes.hash.push(hash.to_vec());
    }
    let (tenants, sizes): (Vec<Uuid>, Vec<i64>) = staged
        .trees
        .iter()
        .map(|(tenant, tree)| (tenant.0, to_i64(tree.size)))
        .unzip();
    let heads = HeadColumns::of(&staged.heads);
    sqlx::query(
        "WITH receipts AS (
             INSERT INTO task_receipts (task_id, tenant_id, leaf_index, state, last_seq, hash_curr,
                                        issued_at, key_id, signature)
             SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::bigint[], $4::text[], $5::bigint[],
                                  $6::text[], $7::text[], $8::text[], $9::text[])
         ), nodes AS (
             INSERT INTO log_nodes (tenant_id, level, idx, hash)
             SELECT * FROM UNNEST($10::uuid[], $11::smallint[], $12::bigint[], $13::bytea[])
         ), trees AS (
             INSERT INTO log_trees (tenant_id, tree_size)
             SELECT * FROM UNNEST($14::uuid[], $15::bigint[])
             ON CONFLICT (tenant_id) DO UPDATE SET tree_size = EXCLUDED.tree_size
         ), heads AS (
             INSERT INTO log_heads (tenant_id, tree_size, root_hash, issued_at, key_id, signature)
             SELECT * FROM UNNEST($16::uuid[], $17::bigint[], $18::text[], $19::text[], $20::text[],
                                  $21::text[])
             ON CONFLICT (tenant_id, tree_size) DO NOTHING
         )
         UPDATE projector_offsets SET applied_seq = $23, fanned_seq = $24 WHERE consumer = $22",
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
    .bind(nodes.tenant_id)
    .bind(nodes.level)
    .bind(nodes.idx)
    .bind(nodes.hash)
    .bind(tenants)
    .bind(sizes)
    .bind(heads.tenant_id)
    .bind(heads.tree_size)
    .bind(heads.root_hash)
    .bind(heads.issued_at)
    .bind(heads.key_id)
    .bind(heads.signature)
    .bind(consumer)
    .bind(to_i64(to.applied))
    .bind(to_i64(to.fanned))
    .execute(tx)
    .await?;
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

#[derive(Default)]
struct NodeColumns {
    tenant_id: Vec<Uuid>,
    level: Vec<i16>,
    idx: Vec<i64>,
    hash: Vec<Vec<u8>>,
}

#[derive(Default)]
struct HeadColumns {
    tenant_id: Vec<Uuid>,
    tree_size: Vec<i64>,
    root_hash: Vec<String>,
    issued_at: Vec<String>,
    key_id: Vec<String>,
    signature: Vec<String>,
}

impl HeadColumns {
    fn of(heads: &[SignedHead]) -> Self {
        let mut cols = Self::default();
        for signed in heads {
            let h = &signed.head;
            cols.tenant_id.push(h.tenant_id.0);
            cols.tree_size.push(to_i64(h.tree_size));
            cols.root_hash.push(h.root_hash.clone());
            cols.issued_at.push(h.issued_at.clone());
            cols.key_id.push(h.key_id.clone());
            cols.signature.push(signed.signature.clone());
        }
        cols
    }
}

/// Stores heads signed outside a batch (held back, or missing after a crash).
pub async fn store_heads(pool: &PgPool, heads: &[SignedHead]) -> Result<(), Error> {
    let cols = HeadColumns::of(heads);
    sqlx::query(
        "INSERT INTO log_heads (tenant_id, tree_size, root_hash, issued_at, key_id, signature)
         SELECT * FROM UNNEST($1::uuid[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[])
         ON CONFLICT (tenant_id, tree_size) DO NOTHING",
    )
    .bind(cols.tenant_id)
    .bind(cols.tree_size)
    .bind(cols.root_hash)
    .bind(cols.issued_at)
    .bind(cols.key_id)
    .bind(cols.signature)
    .execute(pool)
    .await?;
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
    let sizes: Vec<(Uuid, i64)> =
        sqlx::query_as("SELECT tenant_id, tree_size FROM log_trees WHERE tenant_id = ANY($1)")
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
            nodes.entry(tenant).or_default().insert(
                (u32::try_from(level).unwrap_or_default(), to_u64(idx)),
                hash,
            );
        }
    }
    let mut trees: HashMap<TenantId, Frontier> =
        tenants.iter().map(|t| (*t, Frontier::default())).collect();
    for (tenant, size) in sizes {
        let loaded = Frontier::load(to_u64(size), &nodes.remove(&tenant).unwrap_or_default())
            .ok_or_else(|| {
                Error::MissingNodes(format!(
                    "the transparency log of tenant {tenant} lacks tree nodes its size ({size}) needs \
                     (table log_nodes was changed); restore log_nodes and log_trees from a backup"
                ))
            })?;
        trees.insert(TenantId(tenant), loaded);
    }
    Ok(trees)
}
