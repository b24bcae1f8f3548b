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

/// What a batch adds to the tenant logs, before its leaves are hashed into the trees and
/// its receipts and heads are signed.
#[derive(Debug, Default)]
pub struct Unsigned {
    /// New receipts, in issue order.
    receipts: Vec<Receipt>,
    /// Each touched tenant's tree before the batch.
    trees: HashMap<TenantId, Frontier>,
    /// Tenants whose head is signed with the batch.
    heads: Vec<TenantId>,
}

impl Unsigned {
    /// Whether it adds nothing.
    pub fn is_empty(&self) -> bool {
        self.receipts.is_empty()
    }

    /// Appends the receipts to their trees and signs them and the heads (CPU work: run it
    /// off the async threads).
    pub fn sign(self, signer: &Signer) -> Staged {
        let mut trees = self.trees;
        let mut nodes = Vec::with_capacity(self.receipts.len() * 2);
        let mut receipts = Vec::with_capacity(self.receipts.len());
        for receipt in self.receipts {
            let tenant = receipt.tenant_id;
            let tree = trees.entry(tenant).or_default();
            let leaf = tree.size;
            let canonical = receipt.canonical();
            for (id, hash) in tree.append(merkle::leaf_hash(&canonical)) {
                nodes.push((tenant, id, hash));
            }
            let signed = SignedReceipt {
                signature: signer.sign(&canonical),
                receipt,
                alg: ALG.into(),
            };
            receipts.push((signed, leaf));
        }
        let heads = self
            .heads
            .iter()
            .filter_map(|tenant| Some(head(signer, *tenant, trees.get(tenant)?).sign(signer)))
            .collect();
        Staged {
            receipts,
            nodes,
            heads,
            trees,
        }
    }
}

/// The head of `tenant`'s `tree`, now.
fn head(signer: &Signer, tenant: TenantId, tree: &Frontier) -> Head {
    Head {
        tenant_id: tenant,
        tree_size: tree.size,
        root_hash: hex::encode(tree.root()),
        issued_at: shared::time::now_ts(),
        key_id: signer.public().kid.clone(),
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
        for tenant in tenants {
            let tree = self.trees.get(&tenant).cloned().unwrap_or_default();
            staged.trees.insert(tenant, tree);
        }
        for end in ends {
            staged.receipts.push(Receipt {
                task_id: end.task_id,
                tenant_id: end.tenant_id,
                state: end.kind.as_str().to_owned(),
                last_seq: end.seq,
                hash_curr: end.hash_curr.clone(),
                issued_at: issued_at.clone(),
                key_id: self.signer.public().kid.clone(),
            });
        }
        let now = Instant::now();
        for tenant in staged.trees.keys() {
            match self.signed_at.get(tenant) {
                Some(at) if now.duration_since(*at) < HEAD_EVERY => {
                    self.due.entry(*tenant).or_insert(*at + HEAD_EVERY);
                }
                _ => staged.heads.push(*tenant),
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
                        .push(head(&self.signer, tenant, tree).sign(&self.signer));
                }
                _ => {
                    self.due.remove(&tenant);
                }
            }
        }
        Ok(staged)
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
