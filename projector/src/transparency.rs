//! Receipts and the tenant logs, as the projector writes them (§3.3, §3.3a). For each
//! batch it signs a receipt per terminal event, appends them to their tenants' trees
//! (kept as frontiers in memory, loaded from Postgres on first use), and signs a tree head
//! per tenant that gained leaves — at most one a second per tenant; a later one is due
//! then ([`TenantLogs::next_due`]). Everything is staged into the batch's transaction
//! (signed beside the batch's first writes, [`Unsigned::sign`]) and becomes the cached
//! state only after it commits ([`TenantLogs::committed`]).

use std::collections::HashMap;
use std::time::Duration;

use shared::audit::merkle::{self, Frontier, Hash, NodeId};
use shared::audit::signed::{ALG, Head, Receipt, SignedHead, SignedReceipt};
use shared::audit::signer::Signer;
use shared::events::wire::Envelope;
use shared::ids::TenantId;
use sqlx::PgPool;
use tokio::time::Instant;

use crate::store;

/// Least time between two heads of one tenant.
const HEAD_EVERY: Duration = Duration::from_secs(1);

/// What a batch adds to the tenant logs, before its receipts and heads are signed.
#[derive(Debug, Default)]
pub struct Unsigned {
    /// New receipts, each with its canonical form and leaf index.
    receipts: Vec<(Receipt, Vec<u8>, u64)>,
    /// New heads.
    heads: Vec<Head>,
    /// New complete subtrees.
    nodes: Vec<(TenantId, NodeId, Hash)>,
    /// Each touched tenant's tree after the batch.
    trees: HashMap<TenantId, Frontier>,
}

impl Unsigned {
    /// Whether it adds nothing.
    pub fn is_empty(&self) -> bool {
        self.receipts.is_empty() && self.heads.is_empty()
    }

    /// Signs every receipt and head (CPU work: run it off the async threads).
    pub fn sign(self, signer: &Signer) -> Staged {
        let receipts = self
            .receipts
            .into_iter()
            .map(|(receipt, canonical, leaf)| {
                let signed = SignedReceipt {
                    signature: signer.sign(&canonical),
                    receipt,
                    alg: ALG.into(),
                };
                (signed, leaf)
            })
            .collect();
        Staged {
            receipts,
            nodes: self.nodes,
            heads: self.heads.into_iter().map(|h| h.sign(signer)).collect(),
            trees: self.trees,
        }
    }
}

/// What a batch adds to the tenant logs, signed.
#[derive(Debug, Default)]
pub struct Staged {
    /// New receipts, each with its leaf index.
    pub receipts: Vec<(SignedReceipt, u64)>,
    /// New complete subtrees.
    pub nodes: Vec<(TenantId, NodeId, Hash)>,
    /// New heads.
    pub heads: Vec<SignedHead>,
    /// Each touched tenant's tree after the batch.
    pub trees: HashMap<TenantId, Frontier>,
}

impl Staged {
    /// Whether it writes nothing.
    pub fn is_empty(&self) -> bool {
        self.receipts.is_empty() && self.heads.is_empty()
    }
}

/// The projector's view of every tenant log it touched.
pub struct TenantLogs {
    signer: Signer,
    trees: HashMap<TenantId, Frontier>,
    /// When each tenant's last head was signed.
    signed_at: HashMap<TenantId, Instant>,
    /// Tenants with leaves newer than their last head, and when their head is due.
    due: HashMap<TenantId, Instant>,
}

impl TenantLogs {
    /// Logs signed with `signer`.
    pub fn new(signer: Signer) -> Self {
        Self {
            signer,
            trees: HashMap::new(),
            signed_at: HashMap::new(),
            due: HashMap::new(),
        }
    }

    /// The signing key.
    pub fn signer(&self) -> &Signer {
        &self.signer
    }

    /// Forgets cached trees (after a failed commit or a restart).
    pub fn forget(&mut self) {
        self.trees.clear();
    }

    /// When the next held-back head is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.due.values().min().copied()
    }

    /// Makes a head due now for each tenant whose leaves are newer than its last head
    /// (what a crash between a batch and its delayed head leaves).
    pub async fn find_unsigned(&mut self, pool: &PgPool) -> Result<(), store::Error> {
        let now = Instant::now();
        for tenant in store::unsigned_trees(pool).await? {
            self.due.insert(tenant, now);
        }
        Ok(())
    }

    /// Loads the trees of `tenants` that are not cached.
    async fn load(&mut self, pool: &PgPool, tenants: &[TenantId]) -> Result<(), store::Error> {
        let missing: Vec<TenantId> = tenants
            .iter()
            .filter(|t| !self.trees.contains_key(t))
            .copied()
            .collect();
        if !missing.is_empty() {
            self.trees.extend(store::frontiers(pool, &missing).await?);
        }
        Ok(())
    }

    /// Receipts for the terminal events among `events`, their leaves, and heads for
    /// tenants whose head is not held back, all still to be signed.
    pub async fn stage(
        &mut self,
        pool: &PgPool,
        events: &[&Envelope],
    ) -> Result<Unsigned, store::Error> {
        let ends: Vec<&Envelope> = events
            .iter()
            .copied()
            .filter(|e| e.kind.is_terminal())
            .collect();
        let mut staged = Unsigned::default();
        if ends.is_empty() {
            return Ok(staged);
        }
        let mut tenants: Vec<TenantId> = ends.iter().map(|e| e.tenant_id).collect();
        tenants.sort_unstable_by_key(|t| t.0);
        tenants.dedup();
        self.load(pool, &tenants).await?;
        let issued_at = shared::time::now_ts();
        for end in ends {
            let tree = staged
                .trees
                .entry(end.tenant_id)
                .or_insert_with(|| self.trees.get(&end.tenant_id).cloned().unwrap_or_default());
            let receipt = Receipt {
                task_id: end.task_id,
                tenant_id: end.tenant_id,
                state: end.kind.as_str().to_owned(),
                last_seq: end.seq,
                hash_curr: end.hash_curr.clone(),
                issued_at: issued_at.clone(),
                key_id: self.signer.public().kid.clone(),
            };
            let leaf = tree.size;
            let canonical = receipt.canonical();
            for (id, hash) in tree.append(merkle::leaf_hash(&canonical)) {
                staged.nodes.push((end.tenant_id, id, hash));
            }
            staged.receipts.push((receipt, canonical, leaf));
        }
        let now = Instant::now();
        for (tenant, tree) in &staged.trees {
            match self.signed_at.get(tenant) {
                Some(at) if now.duration_since(*at) < HEAD_EVERY => {
                    self.due.entry(*tenant).or_insert(*at + HEAD_EVERY);
                }
                _ => staged.heads.push(self.head(*tenant, tree)),
            }
        }
        Ok(staged)
    }

    /// Heads for every tenant whose held-back head is due by now.
    pub async fn due_heads(&mut self, pool: &PgPool) -> Result<Staged, store::Error> {
        let now = Instant::now();
        let tenants: Vec<TenantId> = self
            .due
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(t, _)| *t)
            .collect();
        self.load(pool, &tenants).await?;
        let mut staged = Staged::default();
        for tenant in tenants {
            match self.trees.get(&tenant) {
                Some(tree) if tree.size > 0 => {
                    staged
                        .heads
                        .push(self.head(tenant, tree).sign(&self.signer));
                }
                _ => {
                    self.due.remove(&tenant);
                }
            }
        }
        Ok(staged)
    }

    fn head(&self, tenant: TenantId, tree: &Frontier) -> Head {
        Head {
            tenant_id: tenant,
            tree_size: tree.size,
            root_hash: hex::encode(tree.root()),
            issued_at: shared::time::now_ts(),
            key_id: self.signer.public().kid.clone(),
        }
    }

    /// Makes a committed batch's trees and heads the current state.
    pub fn committed(&mut self, staged: Staged) {
        let now = Instant::now();
        for head in &staged.heads {
            self.signed_at.insert(head.head.tenant_id, now);
            self.due.remove(&head.head.tenant_id);
        }
        self.trees.extend(staged.trees);
    }
}
