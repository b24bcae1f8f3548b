//! The tenant log's Merkle tree (§3.3a), hashed as RFC 9162 §2.1: leaf
//! `SHA-256(0x00 || data)`, node `SHA-256(0x01 || left || right)`.
//!
//! A stored tree keeps every *complete* subtree: node `(level, index)` is the hash of
//! leaves `[index · 2^level, (index + 1) · 2^level)`, written once when its last leaf
//! arrives and never changed. Any root or proof of a tree of size N is built from
//! O(log² N) of them: [`needed`] lists which, so a store can fetch them in one read, and
//! [`root`], [`inclusion`] and [`consistency`] build from them. [`verify_inclusion`] and
//! [`verify_consistency`] are RFC 9162 §2.1.3.2 and §2.1.4.2, for auditors.

use std::collections::{BTreeSet, HashMap};

use sha2::{Digest, Sha256};

/// A SHA-256 digest.
pub type Hash = [u8; 32];

/// A stored subtree: `(level, index)`.
pub type NodeId = (u32, u64);

/// The hash of a leaf holding `data`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([0u8]);
    hasher.update(data);
    hasher.finalize().into()
}

/// The hash of an inner node.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([1u8]);
    hasher.update(left);
    hasher.update(right);
    hasher.finalize().into()
}

/// The root of the empty tree: SHA-256 of nothing.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// The largest power of two below `n` (`n` ≥ 2).
fn split(n: u64) -> u64 {
    1 << (63 - (n - 1).leading_zeros())
}

/// Where subtree hashes come from.
trait Source {
    fn node(&mut self, id: NodeId) -> Hash;
}

/// Records which nodes a computation reads (answering zeros).
struct Recorder(BTreeSet<NodeId>);

impl Source for Recorder {
    fn node(&mut self, id: NodeId) -> Hash {
        self.0.insert(id);
        [0; 32]
    }
}

/// Nodes fetched from a store. A missing one reads as zeros, so the result fails to verify.
struct Fetched<'a>(&'a HashMap<NodeId, Hash>);

impl Source for Fetched<'_> {
    fn node(&mut self, id: NodeId) -> Hash {
        self.0.get(&id).copied().unwrap_or([0; 32])
    }
}

/// MTH of leaves `[a, b)`; `a` is aligned to a power of two at least `b - a`, as in
/// every range the RFC's recursions visit.
fn mth(nodes: &mut impl Source, a: u64, b: u64) -> Hash {
    let n = b - a;
    if n.is_power_of_two() {
        let level = n.trailing_zeros();
        return nodes.node((level, a >> level));
    }
    let k = split(n);
    let left = mth(nodes, a, a + k);
    let right = mth(nodes, a + k, b);
    node_hash(&left, &right)
}

/// RFC 9162 PATH(m, D[a:b]), leaf to root.
fn path(nodes: &mut impl Source, m: u64, a: u64, b: u64, out: &mut Vec<Hash>) {
    let n = b - a;
    if n <= 1 {
        return;
    }
    let k = split(n);
    if m < a + k {
        path(nodes, m, a, a + k, out);
        out.push(mth(nodes, a + k, b));
    } else {
        path(nodes, m, a + k, b, out);
        out.push(mth(nodes, a, a + k));
    }
}

/// RFC 9162 SUBPROOF(m, D[a:b], complete).
fn subproof(nodes: &mut impl Source, m: u64, a: u64, b: u64, complete: bool, out: &mut Vec<Hash>) {
    let n = b - a;
    if m == n {
        if !complete {
            out.push(mth(nodes, a, b));
        }
        return;
    }
    let k = split(n);
    if m <= k {
        subproof(nodes, m, a, a + k, complete, out);
        out.push(mth(nodes, a + k, b));
    } else {
        subproof(nodes, m - k, a + k, b, false, out);
        out.push(mth(nodes, a, a + k));
    }
}

/// A computation over a tree, run once to list its nodes and once over them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Query {
    /// The root of the tree of `size` leaves (`size` ≥ 1).
    Root {
        /// Leaves.
        size: u64,
    },
    /// The audit path of leaf `index` in the tree of `size` leaves.
    Inclusion {
        /// The leaf.
        index: u64,
        /// Leaves (more than `index`).
        size: u64,
    },
    /// The proof that the tree of `from` leaves is a prefix of the tree of `to`.
    Consistency {
        /// The older size (1 ≤ `from` ≤ `to`).
        from: u64,
        /// The newer size.
        to: u64,
    },
}

impl Query {
    /// Whether the sizes make sense (a query that does not computes nothing).
    fn is_valid(self) -> bool {
        match self {
            Self::Root { size } => size >= 1,
            Self::Inclusion { index, size } => index < size,
            Self::Consistency { from, to } => 1 <= from && from <= to,
        }
    }

    fn run(self, nodes: &mut impl Source) -> Vec<Hash> {
        let mut out = Vec::new();
        if !self.is_valid() {
            return out;
        }
        match self {
            Self::Root { size } => out.push(mth(nodes, 0, size)),
            Self::Inclusion { index, size } => path(nodes, index, 0, size, &mut out),
            Self::Consistency { from, to } if from < to => {
                subproof(nodes, from, 0, to, true, &mut out);
            }
            Self::Consistency { .. } => {}
        }
        out
    }
}

/// The stored nodes `query` reads.
pub fn needed(query: Query) -> Vec<NodeId> {
    let mut recorder = Recorder(BTreeSet::new());
    query.run(&mut recorder);
    recorder.0.into_iter().collect()
}

/// Runs `query` over the fetched nodes: the root alone, or the proof's hashes.
pub fn answer(query: Query, nodes: &HashMap<NodeId, Hash>) -> Vec<Hash> {
    query.run(&mut Fetched(nodes))
}

/// The root of a tree of `size` leaves from its stored nodes.
pub fn root(size: u64, nodes: &HashMap<NodeId, Hash>) -> Hash {
    if size == 0 {
        return empty_root();
    }
    answer(Query::Root { size }, nodes)
        .pop()
        .unwrap_or_else(empty_root)
}

/// The audit path of leaf `index` in the tree of `size` leaves.
pub fn inclusion(index: u64, size: u64, nodes: &HashMap<NodeId, Hash>) -> Vec<Hash> {
    answer(Query::Inclusion { index, size }, nodes)
}

/// The consistency proof from the tree of `from` leaves to the tree of `to`.
pub fn consistency(from: u64, to: u64, nodes: &HashMap<NodeId, Hash>) -> Vec<Hash> {
    answer(Query::Consistency { from, to }, nodes)
}

/// RFC 9162 §2.1.3.2: whether `path` proves leaf `index` (hash `leaf`) is in the tree of
/// `size` leaves with root `root`.
pub fn verify_inclusion(index: u64, size: u64, leaf: &Hash, path: &[Hash], root: &Hash) -> bool {
    if index >= size {
        return false;
    }
    let (mut f, mut s) = (index, size - 1);
    let mut r = *leaf;
    for p in path {
        if s == 0 {
            return false;
        }
        if f & 1 == 1 || f == s {
            r = node_hash(p, &r);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    s == 0 && r == *root
}

/// RFC 9162 §2.1.4.2: whether `proof` shows the tree of `from` leaves (root `old`) is a
/// prefix of the tree of `to` leaves (root `new`). `from` must be at least 1.
pub fn verify_consistency(from: u64, to: u64, old: &Hash, new: &Hash, proof: &[Hash]) -> bool {
    if from == 0 || from > to {
        return false;
    }
    if from == to {
        return proof.is_empty() && old == new;
    }
    let mut proof = proof.to_vec();
    if from.is_power_of_two() {
        proof.insert(0, *old);
    }
    let Some((first, rest)) = proof.split_first() else {
        return false;
    };
    let (mut f, mut s) = (from - 1, to - 1);
    while f & 1 == 1 {
        f >>= 1;
        s >>= 1;
    }
    let (mut fr, mut sr) = (*first, *first);
    for c in rest {
        if s == 0 {
            return false;
        }
        if f & 1 == 1 || f == s {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        f >>= 1;
        s >>= 1;
    }
    fr == *old && sr == *new && s == 0
}

/// The right edge of a tree: enough to append leaves and compute the root.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Frontier {
    /// Leaves so far.
    pub size: u64,
    /// `edge[level]`: the complete subtree of 2^level leaves at the right edge, present
    /// exactly where bit `level` of `size` is set.
    edge: Vec<Option<Hash>>,
}

impl Frontier {
    /// The nodes that make up the frontier of a tree of `size` leaves.
    pub fn ids(size: u64) -> Vec<NodeId> {
        (0..64)
            .filter(|level| size >> level & 1 == 1)
            .map(|level| (level, (size >> level) - 1))
            .collect()
    }

    /// The frontier of a tree of `size` leaves from its nodes ([`Frontier::ids`]); `None`
    /// if one is missing.
    pub fn load(size: u64, nodes: &HashMap<NodeId, Hash>) -> Option<Self> {
        let mut edge = vec![None; 64 - size.leading_zeros() as usize];
        for id in Self::ids(size) {
            edge[id.0 as usize] = Some(*nodes.get(&id)?);
        }
        Some(Self { size, edge })
    }

    /// Appends a leaf; returns every node it completes, the leaf first.
    pub fn append(&mut self, leaf: Hash) -> Vec<(NodeId, Hash)> {
        let index = self.size;
        let mut created = vec![((0, index), leaf)];
        let mut carry = leaf;
        let mut level = 0;
        while let Some(Some(left)) = self.edge.get(level) {
            carry = node_hash(left, &carry);
            self.edge[level] = None;
            level += 1;
            created.push(((level as u32, index >> level), carry));
        }
        if self.edge.len() <= level {
            self.edge.resize(level + 1, None);
        }
        self.edge[level] = Some(carry);
        self.size += 1;
        created
    }

    /// The root of the tree so far.
    pub fn root(&self) -> Hash {
        let mut hashes = self.edge.iter().flatten();
        let Some(first) = hashes.next() else {
            return empty_root();
        };
        hashes.fold(*first, |acc, left| node_hash(left, &acc))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// MTH straight from the RFC's definition.
    fn naive(leaves: &[Hash]) -> Hash {
        match leaves.len() {
            0 => empty_root(),
            1 => leaves[0],
            n => {
                let k = split(n as u64) as usize;
                node_hash(&naive(&leaves[..k]), &naive(&leaves[k..]))
            }
        }
    }

    fn tree(n: u64) -> (Vec<Hash>, HashMap<NodeId, Hash>, Frontier) {
        let leaves: Vec<Hash> = (0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        let mut frontier = Frontier::default();
        let mut nodes = HashMap::new();
        for leaf in &leaves {
            nodes.extend(frontier.append(*leaf));
        }
        (leaves, nodes, frontier)
    }

    #[test]
    fn stored_nodes_give_the_rfc_root_for_every_size() {
        let (leaves, nodes, _) = tree(70);
        for size in 1..=70u64 {
            let prefix = &leaves[..size as usize];
            assert_eq!(root(size, &nodes), naive(prefix), "size {size}");
            let (_, _, frontier) = tree(size);
            assert_eq!(frontier.root(), naive(prefix), "frontier {size}");
            let ids = Frontier::ids(size);
            let reloaded = Frontier::load(size, &nodes).expect("frontier nodes stored");
            assert_eq!(reloaded, frontier, "reload {size} from {ids:?}");
        }
    }

    #[test]
    fn every_inclusion_proof_verifies_and_a_wrong_one_does_not() {
        let (leaves, nodes, _) = tree(40);
        for size in 1..=40u64 {
            let root = naive(&leaves[..size as usize]);
            for index in 0..size {
                let proof = inclusion(index, size, &nodes);
                let leaf = &leaves[index as usize];
                assert!(verify_inclusion(index, size, leaf, &proof, &root));
                let other = leaf_hash(b"forged");
                assert!(!verify_inclusion(index, size, &other, &proof, &root));
                if size > 1 {
                    assert!(!verify_inclusion(
                        (index + 1) % size,
                        size,
                        leaf,
                        &proof,
                        &root
                    ));
                }
            }
            assert!(!verify_inclusion(size, size, &leaves[0], &[], &root));
        }
    }

    #[test]
    fn every_consistency_proof_verifies_and_a_rewrite_does_not() {
        let (leaves, nodes, _) = tree(40);
        let mut rewritten = leaves.clone();
        rewritten[3] = leaf_hash(b"rewritten");
        for to in 1..=40u64 {
            let new = naive(&leaves[..to as usize]);
            for from in 1..=to {
                let old = naive(&leaves[..from as usize]);
                let proof = consistency(from, to, &nodes);
                assert!(
                    verify_consistency(from, to, &old, &new, &proof),
                    "{from}→{to}"
                );
                if from > 3 {
                    let forged = naive(&rewritten[..from as usize]);
                    assert!(!verify_consistency(from, to, &forged, &new, &proof));
                }
            }
        }
        assert!(!verify_consistency(
            0,
            3,
            &empty_root(),
            &naive(&leaves[..3]),
            &[]
        ));
    }

    #[test]
    fn nonsense_sizes_compute_nothing() {
        let nodes = HashMap::new();
        for query in [
            Query::Root { size: 0 },
            Query::Inclusion { index: 5, size: 5 },
            Query::Inclusion { index: 0, size: 0 },
            Query::Consistency { from: 0, to: 3 },
            Query::Consistency { from: 4, to: 3 },
        ] {
            assert!(needed(query).is_empty(), "{query:?}");
            assert!(answer(query, &nodes).is_empty(), "{query:?}");
        }
        assert_eq!(root(0, &nodes), empty_root());
        let huge = needed(Query::Inclusion {
            index: u64::MAX - 1,
            size: u64::MAX,
        });
        assert!(huge.len() < 200);
    }

    #[test]
    fn a_proof_reads_few_nodes() {
        let reads = needed(Query::Inclusion {
            index: 123_456,
            size: 1_000_001,
        });
        assert!(reads.len() < 60, "{}", reads.len());
        let reads = needed(Query::Consistency {
            from: 777_777,
            to: 1_000_001,
        });
        assert!(reads.len() < 60, "{}", reads.len());
    }
}
