//! The domain of AxonTask, shared by every role: ids, the task state machine, the event
//! envelope and hash chain, NATS subject and Redis key names, configuration, API-key auth
//! and the HTTP error shape.
//!
//! It owns no process and starts nothing. Pure logic (the state machine, the chain) is
//! unit-tested here without servers; the few functions that touch Postgres or NATS are
//! small helpers used by several roles.

pub mod adapters;
pub mod audit;
pub mod auth;
pub mod chain;
pub mod config;
pub mod db;
pub mod events;
pub mod faults;
pub mod http;
pub mod ids;
pub mod keys;
pub mod names;
pub mod nats;
pub mod plans;
pub mod queue;
pub mod ratelimit;
pub mod resume;
pub mod sessions;
pub mod task;
pub mod time;
pub mod tokens;
pub mod usage;

/// The schema migrations in `migrations/`, applied by `axontask migrate`.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");
