//! What lets an auditor prove a task's history without trusting the server (§3.2–3.3a):
//! Ed25519 keys ([`signer`]), receipts and signed tree heads ([`signed`]), the tenant
//! log's Merkle tree ([`merkle`]), the verdict on one task ([`verdict`]), and the
//! Postgres reads every role and `axontask verify` share ([`store`]).

pub mod merkle;
pub mod signed;
pub mod signer;
pub mod store;
pub mod verdict;
