//! The auditor's check of one task (§3.10 `axontask verify`): its chain, its receipt, the
//! receipt's inclusion in a signed head of the tenant log, and optionally that head's
//! consistency with one saved earlier. Pure: the sources gather [`Evidence`]; [`verify`]
//! judges it, so the CLI, the API and MCP give the same verdict.

use serde::{Deserialize, Serialize};

use super::merkle::{self, Hash};
use super::signed::{SignatureError, SignedHead, SignedReceipt};
use super::signer::PublicKey;
use crate::chain::{GENESIS, Unsealed};
use crate::events::wire::Envelope;
use crate::ids::TaskId;

/// `GET /api/log/proof/inclusion`: where a receipt is in a tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InclusionProof {
    /// The receipt's leaf.
    pub leaf_index: u64,
    /// The tree the path leads to the root of.
    pub tree_size: u64,
    /// Lowercase hex hashes, leaf to root (RFC 9162 §2.1.3.1).
    pub audit_path: Vec<String>,
}

/// `GET /api/log/proof/consistency`: that one tree is a prefix of another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsistencyProof {
    /// The older size.
    pub from: u64,
    /// The newer size.
    pub to: u64,
    /// Lowercase hex hashes (RFC 9162 §2.1.4.1).
    pub proof: Vec<String>,
}

/// What the log source said about the receipt's inclusion.
#[derive(Debug, Clone, PartialEq)]
pub enum Inclusion {
    /// A proof against the head.
    Proof(InclusionProof),
    /// The receipt is newer than the head (heads follow within a second).
    NotYet(String),
    /// The log has no leaf for this task.
    Missing(String),
}

/// Everything a verdict is judged from.
#[derive(Debug, Clone)]
pub struct Evidence {
    /// The task.
    pub task_id: TaskId,
    /// Its events in seq order, as the source holds them (empty: the source has none).
    pub events: Vec<Envelope>,
    /// Its receipt, if the source has one.
    pub receipt: Option<SignedReceipt>,
    /// The published keys.
    pub keys: Vec<PublicKey>,
    /// The latest signed head and the receipt's place in it, when a log source is given.
    pub log: Option<(SignedHead, Inclusion)>,
    /// A head saved earlier and the proof from it to the latest one (`--head`).
    pub earlier: Option<(SignedHead, Result<ConsistencyProof, String>)>,
}

/// A check's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Checked and good.
    Ok,
    /// Checked and bad.
    Failed,
    /// Not checked: the sources lack what it needs.
    Skipped,
    /// Not yet checkable (the task runs, or its receipt is newer than the latest head).
    Pending,
}

/// The overall verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Every check passed.
    Verified,
    /// A check failed: see `failure`.
    Failed,
    /// Nothing failed, but a check was skipped or is pending.
    Incomplete,
}

/// One check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    /// `chain`, `receipt`, `inclusion` or `consistency`.
    pub name: String,
    /// Its result.
    pub status: Status,
    /// What was found, in words.
    pub detail: String,
}

/// The first thing wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// The check that failed.
    pub check: String,
    /// Why, as a code: `task_missing`, `gap`, `wrong_hash_prev`, `hash_mismatch`,
    /// `wrong_task`, `event_after_end`, `no_receipt`, `unknown_key`, `bad_signature`,
    /// `receipt_mismatch`, `not_included`, `inconsistent_heads`.
    pub reason: String,
    /// The first bad event, when one is to blame.
    pub seq: Option<u64>,
    /// What went wrong, in words.
    pub message: String,
}

/// The verdict on one task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    /// The task.
    pub task_id: TaskId,
    /// The overall result.
    pub verdict: Outcome,
    /// `verdict == verified`.
    pub valid: bool,
    /// Events checked.
    pub events: u64,
    /// The last event's seq.
    pub last_seq: Option<u64>,
    /// The last event's `hash_curr`.
    pub hash_curr: Option<String>,
    /// The terminal state, if the task ended.
    pub state: Option<String>,
    /// Each check, in order.
    pub checks: Vec<Check>,
    /// The first failure.
    pub failure: Option<Failure>,
    /// One line for people.
    pub summary: String,
}

struct Found {
    reason: &'static str,
    seq: Option<u64>,
    message: String,
}

fn found(reason: &'static str, seq: Option<u64>, message: impl Into<String>) -> Found {
    Found {
        reason,
        seq,
        message: message.into(),
    }
}

type Judged = Result<(Status, String), Found>;

/// Judges `evidence`.
pub fn verify(evidence: &Evidence) -> Verdict {
    let task = evidence.task_id;
    let last = evidence.events.last();
    let ended = last.filter(|e| e.kind.is_terminal());
    let mut judged = vec![
        ("chain", chain(evidence)),
        ("receipt", receipt(evidence)),
        ("inclusion", inclusion(evidence)),
    ];
    if let Some(earlier) = &evidence.earlier {
        judged.push(("consistency", consistency(evidence, earlier)));
    }
    let mut checks = Vec::new();
    let mut failure = None;
    for (name, result) in judged {
        let (status, detail) = match result {
            Ok(judged) => judged,
            Err(f) => {
                let detail = f.message.clone();
                if failure.is_none() {
                    failure = Some(Failure {
                        check: name.into(),
                        reason: f.reason.into(),
                        seq: f.seq,
                        message: f.message,
                    });
                }
                (Status::Failed, detail)
            }
        };
        checks.push(Check {
            name: name.into(),
            status,
            detail,
        });
    }
    let outcome = if failure.is_some() {
        Outcome::Failed
    } else if checks.iter().all(|c| c.status == Status::Ok) {
        Outcome::Verified
    } else {
        Outcome::Incomplete
    };
    let summary = match (&failure, outcome) {
        (Some(f), _) => format!("task {task} FAILED verification: {}", f.message),
        (None, Outcome::Verified) => format!(
            "task {task} verified: {} events, receipt signed, included in the tenant log",
            evidence.events.len()
        ),
        (None, _) => {
            let open: Vec<String> = checks
                .iter()
                .filter(|c| c.status != Status::Ok)
                .map(|c| format!("{}: {}", c.name, c.detail))
                .collect();
            format!(
                "task {task}: nothing is wrong so far, but not fully verified ({})",
                open.join("; ")
            )
        }
    };
    Verdict {
        task_id: task,
        verdict: outcome,
        valid: outcome == Outcome::Verified,
        events: evidence.events.len() as u64,
        last_seq: last.map(|e| e.seq),
        hash_curr: last.map(|e| e.hash_curr.clone()),
        state: ended.map(|e| e.kind.as_str().to_owned()),
        checks,
        failure,
        summary,
    }
}

/// Every event from seq 1: this task's, no gaps, linked, hashed, nothing after the end.
fn chain(evidence: &Evidence) -> Judged {
    let task = evidence.task_id;
    let Some(first) = evidence.events.first() else {
        return Err(found(
            "task_missing",
            None,
            format!("the source has no events of task {task}"),
        ));
    };
    let tenant = first.tenant_id;
    let mut previous: Option<&Envelope> = None;
    for event in &evidence.events {
        let seq = event.seq;
        if event.task_id != task || event.tenant_id != tenant {
            return Err(found(
                "wrong_task",
                Some(seq),
                format!(
                    "seq {seq} belongs to task {} of tenant {}, not to this task",
                    event.task_id, event.tenant_id
                ),
            ));
        }
        let expected_seq = previous.map_or(1, |p| p.seq + 1);
        if seq != expected_seq {
            let (at, message) = if seq > expected_seq {
                (
                    expected_seq,
                    format!("seq {expected_seq} is missing (the next event is seq {seq})"),
                )
            } else {
                (
                    seq,
                    format!("seq {seq} appears after seq {}", expected_seq - 1),
                )
            };
            return Err(found("gap", Some(at), message));
        }
        if let Some(p) = previous.filter(|p| p.kind.is_terminal()) {
            return Err(found(
                "event_after_end",
                Some(seq),
                format!(
                    "seq {seq} follows the terminal event (seq {}, {})",
                    p.seq,
                    p.kind.as_str()
                ),
            ));
        }
        let expected_prev = previous.map_or(GENESIS, |p| p.hash_curr.as_str());
        if event.hash_prev != expected_prev {
            let message = if previous.is_none() {
                "seq 1's hash_prev is not 64 zeros (the genesis)".to_owned()
            } else {
                format!(
                    "seq {seq}'s hash_prev is not the hash_curr of seq {}",
                    seq - 1
                )
            };
            return Err(found("wrong_hash_prev", Some(seq), message));
        }
        let sealed = Unsealed {
            task_id: event.task_id,
            tenant_id: event.tenant_id,
            seq,
            ts: event.ts.clone(),
            kind: event.kind,
            payload: event.payload.clone(),
            hash_prev: event.hash_prev.clone(),
        }
        .seal();
        match sealed {
            Ok(sealed) if sealed.hash_curr == event.hash_curr => {}
            Ok(sealed) => {
                return Err(found(
                    "hash_mismatch",
                    Some(seq),
                    format!(
                        "seq {seq} hashes to {}, but its hash_curr is {}",
                        sealed.hash_curr, event.hash_curr
                    ),
                ));
            }
            Err(e) => return Err(found("hash_mismatch", Some(seq), format!("seq {seq}: {e}"))),
        }
        previous = Some(event);
    }
    let n = evidence.events.len();
    Ok((
        Status::Ok,
        format!("{n} events from seq 1, every link and hash correct"),
    ))
}

fn signature(reason: SignatureError, what: &str) -> Found {
    let code = match reason {
        SignatureError::UnknownKey(_) => "unknown_key",
        SignatureError::Alg(_) | SignatureError::Bad(_) => "bad_signature",
    };
    found(code, None, format!("{what}: {reason}"))
}

/// The receipt: signed by a published key, for this task, matching its last event.
fn receipt(evidence: &Evidence) -> Judged {
    let last = evidence.events.last();
    let Some(signed) = &evidence.receipt else {
        return match last {
            Some(e) if e.kind.is_terminal() => Err(found(
                "no_receipt",
                Some(e.seq),
                format!(
                    "the task ended at seq {} ({}) but has no receipt",
                    e.seq,
                    e.kind.as_str()
                ),
            )),
            Some(_) => Ok((
                Status::Pending,
                "the task has not ended, so it has no receipt yet".into(),
            )),
            None => Ok((Status::Skipped, "no receipt given".into())),
        };
    };
    let r = &signed.receipt;
    signed
        .check(&evidence.keys)
        .map_err(|e| signature(e, "the receipt"))?;
    if r.task_id != evidence.task_id {
        return Err(found(
            "receipt_mismatch",
            None,
            format!(
                "the receipt is for task {}, not {}",
                r.task_id, evidence.task_id
            ),
        ));
    }
    let Some(last) = last else {
        return Err(found(
            "task_missing",
            None,
            format!(
                "the receipt says task {} ended at seq {}, but the source has no events of it",
                r.task_id, r.last_seq
            ),
        ));
    };
    if r.tenant_id != last.tenant_id {
        return Err(found(
            "receipt_mismatch",
            None,
            format!(
                "the receipt is for tenant {}, the events are tenant {}'s",
                r.tenant_id, last.tenant_id
            ),
        ));
    }
    if r.last_seq != last.seq {
        let seq = r.last_seq.min(last.seq) + 1;
        return Err(found(
            "receipt_mismatch",
            Some(seq),
            format!(
                "the receipt covers seq 1..{}, but the log ends at seq {}",
                r.last_seq, last.seq
            ),
        ));
    }
    if r.hash_curr != last.hash_curr || r.state != last.kind.as_str() {
        return Err(found(
            "receipt_mismatch",
            Some(last.seq),
            format!(
                "the receipt says seq {} is {} with hash {}, the log has {} with hash {}",
                r.last_seq,
                r.state,
                r.hash_curr,
                last.kind.as_str(),
                last.hash_curr
            ),
        ));
    }
    Ok((
        Status::Ok,
        format!(
            "signed by key {}, matches seq {} ({})",
            r.key_id, r.last_seq, r.state
        ),
    ))
}

/// How much later than a receipt a head must hold it: heads follow receipts within a
/// second; the rest is room for clocks of two projector machines.
const HEAD_DELAY: std::time::Duration = std::time::Duration::from_secs(60);

/// Whether `later` is more than [`HEAD_DELAY`] after `earlier` (both envelope timestamps).
fn long_after(later: &str, earlier: &str) -> bool {
    match (crate::time::parse_ts(later), crate::time::parse_ts(earlier)) {
        (Some(later), Some(earlier)) => (later - earlier).to_std().is_ok_and(|d| d > HEAD_DELAY),
        _ => false,
    }
}

fn hashes(hex_list: &[String]) -> Option<Vec<Hash>> {
    hex_list
        .iter()
        .map(|h| hex::decode(h).ok().and_then(|b| b.try_into().ok()))
        .collect()
}

fn check_head(head: &SignedHead, evidence: &Evidence, which: &str) -> Result<(), Found> {
    head.check(&evidence.keys)
        .map_err(|e| signature(e, which))?;
    let tenant = evidence.events.first().map(|e| e.tenant_id);
    let tenant = evidence
        .receipt
        .as_ref()
        .map(|r| r.receipt.tenant_id)
        .or(tenant);
    match tenant {
        Some(t) if t != head.head.tenant_id => Err(found(
            "not_included",
            None,
            format!(
                "{which} is tenant {}'s, not tenant {t}'s",
                head.head.tenant_id
            ),
        )),
        _ => Ok(()),
    }
}

/// The receipt is a leaf of the tree the latest signed head commits to.
fn inclusion(evidence: &Evidence) -> Judged {
    let Some(signed) = &evidence.receipt else {
        return Ok((Status::Skipped, "no receipt to look up in the log".into()));
    };
    let Some((head, proof)) = &evidence.log else {
        return Ok((
            Status::Skipped,
            "no log source (give --api or --database-url)".into(),
        ));
    };
    check_head(head, evidence, "the signed head")?;
    let proof = match proof {
        Inclusion::Proof(proof) => proof,
        Inclusion::NotYet(why) if !long_after(&head.head.issued_at, &signed.receipt.issued_at) => {
            return Ok((Status::Pending, why.clone()));
        }
        Inclusion::NotYet(_) => {
            return Err(found(
                "not_included",
                None,
                format!(
                    "the latest head ({}) was signed more than {} s after the receipt ({}), yet the server says it does not hold it",
                    head.head.issued_at,
                    HEAD_DELAY.as_secs(),
                    signed.receipt.issued_at
                ),
            ));
        }
        Inclusion::Missing(why) => return Err(found("not_included", None, why.clone())),
    };
    let h = &head.head;
    let path = hashes(&proof.audit_path);
    let included = proof.tree_size == h.tree_size
        && path.is_some_and(|path| {
            merkle::verify_inclusion(
                proof.leaf_index,
                proof.tree_size,
                &signed.receipt.leaf_hash(),
                &path,
                &h.root(),
            )
        });
    if !included {
        return Err(found(
            "not_included",
            None,
            format!(
                "the proof does not lead from the receipt (leaf {}) to the root of the signed head of size {}",
                proof.leaf_index, h.tree_size
            ),
        ));
    }
    Ok((
        Status::Ok,
        format!(
            "leaf {} of the signed head of size {}",
            proof.leaf_index, h.tree_size
        ),
    ))
}

/// The latest head extends the one saved earlier: nothing removed or rewritten.
fn consistency(
    evidence: &Evidence,
    (old, proof): &(SignedHead, Result<ConsistencyProof, String>),
) -> Judged {
    let Some((new, _)) = &evidence.log else {
        return Ok((
            Status::Skipped,
            "no log source to compare the earlier head with".into(),
        ));
    };
    check_head(new, evidence, "the latest head")?;
    check_head(old, evidence, "the earlier head")?;
    let (o, n) = (&old.head, &new.head);
    let inconsistent = |message: String| Err(found("inconsistent_heads", None, message));
    if o.tenant_id != n.tenant_id {
        return inconsistent(format!(
            "the earlier head is tenant {}'s, the latest tenant {}'s",
            o.tenant_id, n.tenant_id
        ));
    }
    if o.tree_size > n.tree_size {
        return inconsistent(format!(
            "the log shrank: the earlier head has {} receipts, the latest {}",
            o.tree_size, n.tree_size
        ));
    }
    let proof = match proof {
        Ok(proof) => proof,
        Err(why) => return inconsistent(why.clone()),
    };
    let consistent = proof.from == o.tree_size
        && proof.to == n.tree_size
        && hashes(&proof.proof).is_some_and(|p| {
            merkle::verify_consistency(o.tree_size, n.tree_size, &o.root(), &n.root(), &p)
        });
    if !consistent {
        return inconsistent(format!(
            "the tree of size {} is not a prefix of the tree of size {}: receipts were removed or rewritten",
            o.tree_size, n.tree_size
        ));
    }
    Ok((
        Status::Ok,
        format!(
            "the head of size {} extends the earlier one of size {}",
            n.tree_size, o.tree_size
        ),
    ))
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use uuid::Uuid;

    use super::*;
    use crate::audit::merkle::Frontier;
    use crate::audit::signed::{Head, Receipt};
    use crate::audit::signer::Signer;
    use crate::events::EventKind;
    use crate::ids::TenantId;

    fn events(kinds: &[EventKind]) -> Vec<Envelope> {
        let mut previous = GENESIS.to_owned();
        kinds
            .iter()
            .zip(1..)
            .map(|(kind, seq)| {
                let event = Unsealed {
                    task_id: TaskId(Uuid::from_u128(1)),
                    tenant_id: TenantId(Uuid::from_u128(2)),
                    seq,
                    ts: "2026-11-27T07:19:16.123456Z".into(),
                    kind: *kind,
                    payload: json!({}),
                    hash_prev: previous.clone(),
                }
                .seal()
                .expect("seals");
                previous = event.hash_curr.clone();
                event
            })
            .collect()
    }

    /// A finished task with its receipt as leaf 0 of a one-leaf tree, and its head.
    fn evidence(signer: &Signer) -> Evidence {
        let events = events(&[EventKind::Requested, EventKind::Succeeded]);
        let last = events.last().expect("events");
        let receipt = Receipt {
            task_id: last.task_id,
            tenant_id: last.tenant_id,
            state: "succeeded".into(),
            last_seq: 2,
            hash_curr: last.hash_curr.clone(),
            issued_at: "2026-11-27T07:19:17.000000Z".into(),
            key_id: signer.public().kid.clone(),
        };
        let mut tree = Frontier::default();
        tree.append(receipt.leaf_hash());
        let head = head(signer, &tree, "2026-11-27T07:19:17.500000Z");
        Evidence {
            task_id: last.task_id,
            events,
            receipt: Some(receipt.sign(signer)),
            keys: vec![signer.public().clone()],
            log: Some((
                head,
                Inclusion::Proof(InclusionProof {
                    leaf_index: 0,
                    tree_size: 1,
                    audit_path: Vec::new(),
                }),
            )),
            earlier: None,
        }
    }

    fn head(signer: &Signer, tree: &Frontier, at: &str) -> SignedHead {
        Head {
            tenant_id: TenantId(Uuid::from_u128(2)),
            tree_size: tree.size,
            root_hash: hex::encode(tree.root()),
            issued_at: at.into(),
            key_id: signer.public().kid.clone(),
        }
        .sign(signer)
    }

    fn reason(verdict: &Verdict) -> (&str, Option<u64>) {
        let failure = verdict.failure.as_ref();
        (
            failure.map_or("none", |f| f.reason.as_str()),
            failure.and_then(|f| f.seq),
        )
    }

    #[test]
    fn a_whole_task_verifies() {
        let verdict = verify(&evidence(&Signer::from_seed([5; 32])));
        assert_eq!(verdict.verdict, Outcome::Verified, "{verdict:?}");
        assert_eq!(verdict.state.as_deref(), Some("succeeded"));
    }

    #[test]
    fn chain_faults_name_their_seq() {
        let signer = Signer::from_seed([5; 32]);
        let mut after_end = evidence(&signer);
        after_end.events = events(&[
            EventKind::Requested,
            EventKind::Succeeded,
            EventKind::Stdout,
        ]);
        assert_eq!(reason(&verify(&after_end)), ("event_after_end", Some(3)));

        let mut foreign = evidence(&signer);
        foreign.events[1].task_id = TaskId(Uuid::from_u128(9));
        assert_eq!(reason(&verify(&foreign)), ("wrong_task", Some(2)));

        let mut none = evidence(&signer);
        none.events.clear();
        assert_eq!(reason(&verify(&none)), ("task_missing", None));
    }

    #[test]
    fn a_head_that_should_hold_the_receipt_but_does_not_fails() {
        let signer = Signer::from_seed([5; 32]);
        let mut soon = evidence(&signer);
        let (current, _) = soon.log.take().expect("log");
        soon.log = Some((current, Inclusion::NotYet("not yet".into())));
        assert_eq!(verify(&soon).verdict, Outcome::Incomplete);

        let late = head(&signer, &Frontier::default(), "2026-11-27T07:30:00.000000Z");
        let late = (late, Inclusion::NotYet("not yet".into()));
        let mut stale = evidence(&signer);
        stale.log = Some(late);
        assert_eq!(reason(&verify(&stale)).0, "not_included");
    }

    #[test]
    fn the_latest_head_is_checked_even_without_a_receipt() {
        let signer = Signer::from_seed([5; 32]);
        let stranger = Signer::from_seed([6; 32]);
        let mut running = evidence(&signer);
        running.events = events(&[EventKind::Requested]);
        running.receipt = None;
        let (mut latest, inclusion) = running.log.take().expect("log");
        let old = latest.clone();
        latest.signature = head(&stranger, &Frontier::default(), "x").signature;
        running.log = Some((latest, inclusion));
        running.earlier = Some((
            old,
            Ok(ConsistencyProof {
                from: 1,
                to: 1,
                proof: Vec::new(),
            }),
        ));
        let verdict = verify(&running);
        assert_eq!(reason(&verdict).0, "bad_signature", "{verdict:?}");
    }
}
