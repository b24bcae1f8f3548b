//! The end-to-end harness: each [`Cluster`] runs its own nats-server and redis-server on
//! free loopback ports, its own Postgres database (on the server of `DATABASE_URL`), and
//! the real `axontask` binary as separate processes per role, so tests can SIGKILL them.
//!
//! Services come from `scripts/services.sh` (which `scripts/test.sh` runs first).

mod checks;
mod client;
mod cluster;
pub mod docker;
pub mod fly_api;
pub mod mcp;
mod procs;

use std::time::Duration;

pub use checks::assert_chain;
pub use client::{
    attempts, collect_to_end, first_stdout, is_terminal, kinds, open_sse, until_kind,
};
pub use cluster::{Cluster, Options, workspace};
pub use procs::{alive, all_processes_of, parent, processes_of};

/// An HTTP client. Built here only: when the workspace is built together, reqwest has
/// TLS without a default crypto provider (the `axontask` binary's choice), so one is
/// installed first.
pub fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

/// The `JWT_SECRET` of every test cluster (tests sign tokens of their own with it).
pub const JWT_SECRET: &str = "e2e-jwt-secret-e2e-jwt-secret-e2e-jwt";

/// How long a test waits for anything before it fails.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// Polls `check` every 20 ms until it holds or [`PATIENCE`] runs out.
pub async fn eventually<F, Fut>(mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    anyhow::bail!("condition not met within {PATIENCE:?}")
}
