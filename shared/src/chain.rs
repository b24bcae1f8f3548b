//! The hash chain (§3.2): `hash_curr = hex(SHA-256(JCS(envelope without hash_curr)))`.

use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::events::EventKind;
use crate::events::wire::Envelope;
use crate::ids::{TaskId, TenantId};

/// `hash_prev` of a task's first event.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// A log event before it is sealed with its own hash.
#[derive(Debug, Clone, Serialize)]
pub struct Unsealed {
    /// See [`Envelope::task_id`].
    pub task_id: TaskId,
    /// See [`Envelope::tenant_id`].
    pub tenant_id: TenantId,
    /// See [`Envelope::seq`].
    pub seq: u64,
    /// See [`Envelope::ts`].
    pub ts: String,
    /// See [`Envelope::kind`].
    pub kind: EventKind,
    /// See [`Envelope::payload`].
    pub payload: Value,
    /// See [`Envelope::hash_prev`].
    pub hash_prev: String,
}

/// Why a chain does not verify.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum Error {
    /// The payload cannot be canonicalized (it holds a number JCS cannot represent).
    #[error("event cannot be canonicalized: {0}")]
    Canonical(String),
    /// `seq` does not follow the previous event's.
    #[error("seq {found} follows seq {previous}; expected {}", previous + 1)]
    Gap {
        /// The previous event's seq (0 before the first).
        previous: u64,
        /// The seq found.
        found: u64,
    },
    /// `hash_prev` is not the previous event's `hash_curr`.
    #[error("seq {seq}: hash_prev does not match the previous event's hash_curr")]
    BrokenLink {
        /// The event whose link is broken.
        seq: u64,
    },
    /// `hash_curr` is not the hash of the event.
    #[error("seq {seq}: hash_curr is {found}, but the event hashes to {expected}")]
    BadHash {
        /// The event whose hash is wrong.
        seq: u64,
        /// The hash it carries.
        found: String,
        /// The hash it should carry.
        expected: String,
    },
}

impl Unsealed {
    /// The event's canonical JSON (RFC 8785). The envelope's keys are fixed and its values
    /// ASCII (ids, hex, a time stamp, a kind), so they are written in JCS order directly;
    /// only the payload goes through a canonicalizer. Serializing the whole envelope
    /// through one was an eighth of the projector's CPU (perf, issue 9).
    pub fn canonical(&self) -> Result<Vec<u8>, Error> {
        let payload =
            serde_jcs::to_vec(&self.payload).map_err(|e| Error::Canonical(e.to_string()))?;
        let mut out = Vec::with_capacity(payload.len() + 256);
        let string = |out: &mut Vec<u8>, key: &str, value: &str| {
            out.extend_from_slice(key.as_bytes());
            serde_json::to_writer(&mut *out, value).map_err(|e| Error::Canonical(e.to_string()))
        };
        string(&mut out, "{\"hash_prev\":", &self.hash_prev)?;
        string(&mut out, ",\"kind\":", self.kind.as_str())?;
        out.extend_from_slice(b",\"payload\":");
        out.extend_from_slice(&payload);
        out.extend_from_slice(format!(",\"seq\":{}", self.seq).as_bytes());
        string(&mut out, ",\"task_id\":", &self.task_id.to_string())?;
        string(&mut out, ",\"tenant_id\":", &self.tenant_id.to_string())?;
        string(&mut out, ",\"ts\":", &self.ts)?;
        out.push(b'}');
        Ok(out)
    }

    /// Computes `hash_curr` and returns the finished envelope.
    pub fn seal(self) -> Result<Envelope, Error> {
        let hash_curr = hex::encode(Sha256::digest(self.canonical()?));
        Ok(Envelope {
            task_id: self.task_id,
            tenant_id: self.tenant_id,
            seq: self.seq,
            ts: self.ts,
            kind: self.kind,
            payload: self.payload,
            hash_prev: self.hash_prev,
            hash_curr,
        })
    }
}

/// Checks a whole task log from `seq` 1: no gaps, every link, every hash.
pub fn verify(events: &[Envelope]) -> Result<(), Error> {
    let mut previous_seq = 0;
    let mut previous_hash = GENESIS.to_owned();
    for event in events {
        if event.seq != previous_seq + 1 {
            return Err(Error::Gap {
                previous: previous_seq,
                found: event.seq,
            });
        }
        if event.hash_prev != previous_hash {
            return Err(Error::BrokenLink { seq: event.seq });
        }
        let expected = Unsealed {
            task_id: event.task_id,
            tenant_id: event.tenant_id,
            seq: event.seq,
            ts: event.ts.clone(),
            kind: event.kind,
            payload: event.payload.clone(),
            hash_prev: event.hash_prev.clone(),
        }
        .seal()?
        .hash_curr;
        if event.hash_curr != expected {
            return Err(Error::BadHash {
                seq: event.seq,
                found: event.hash_curr.clone(),
                expected,
            });
        }
        previous_seq = event.seq;
        previous_hash = event.hash_curr.clone();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use uuid::Uuid;

    fn chain(n: u64) -> Vec<Envelope> {
        let task_id =
            TaskId(Uuid::parse_str("0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b").expect("uuid"));
        let tenant_id = TenantId(Uuid::nil());
        let mut prev = GENESIS.to_owned();
        (1..=n)
            .map(|seq| {
                let event = Unsealed {
                    task_id,
                    tenant_id,
                    seq,
                    ts: "2026-11-27T07:19:16.123456Z".into(),
                    kind: EventKind::Stdout,
                    payload: json!({"line": format!("line {seq}")}),
                    hash_prev: prev.clone(),
                }
                .seal()
                .expect("integer payload");
                prev = event.hash_curr.clone();
                event
            })
            .collect()
    }

    #[test]
    fn hash_is_sha256_of_sorted_compact_json() {
        let event = &chain(1)[0];
        let canonical = format!(
            r#"{{"hash_prev":"{GENESIS}","kind":"stdout","payload":{{"line":"line 1"}},"seq":1,"task_id":"0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b","tenant_id":"00000000-0000-0000-0000-000000000000","ts":"2026-11-27T07:19:16.123456Z"}}"#
        );
        assert_eq!(
            event.hash_curr,
            hex::encode(Sha256::digest(canonical.as_bytes()))
        );
    }

    #[test]
    fn the_canonical_form_is_rfc_8785_of_the_whole_envelope() {
        let task_id = TaskId(Uuid::now_v7());
        for (kind, payload) in [
            (EventKind::Requested, json!({})),
            (
                EventKind::Stdout,
                json!({"line": "tab\t quote\" back\\ \u{1f} é 😀"}),
            ),
            (
                EventKind::CancelRequested,
                json!({"z": 1, "a": [3, {"y": null, "b": true}], "é": "x", "\u{10000}": 1, "\u{ff61}": 2}),
            ),
            (
                EventKind::Failed,
                json!({"error": "exit code 3", "exit_code": -3}),
            ),
        ] {
            let event = Unsealed {
                task_id,
                tenant_id: TenantId(Uuid::now_v7()),
                seq: 9_007_199_254_740_991,
                ts: "2026-11-27T07:19:16.123456Z".into(),
                kind,
                payload,
                hash_prev: GENESIS.to_owned(),
            };
            assert_eq!(
                event.canonical().expect("canonical"),
                serde_jcs::to_vec(&event).expect("jcs"),
                "{}",
                event.payload
            );
        }
    }

    #[test]
    fn verifies_a_good_chain_and_finds_each_fault() {
        let events = chain(3);
        assert_eq!(verify(&events), Ok(()));

        let mut gap = events.clone();
        gap.remove(1);
        assert_eq!(
            verify(&gap),
            Err(Error::Gap {
                previous: 1,
                found: 3
            })
        );

        let mut tampered = events.clone();
        tampered[1].payload = json!({"line": "forged"});
        assert!(matches!(
            verify(&tampered),
            Err(Error::BadHash { seq: 2, .. })
        ));

        let mut relinked = events;
        relinked[2].hash_prev = GENESIS.to_owned();
        assert_eq!(verify(&relinked), Err(Error::BrokenLink { seq: 3 }));
    }
}
