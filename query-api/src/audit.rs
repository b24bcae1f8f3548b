//! Reads for auditors (§3.3, §3.3a): a task's receipt, the published keys, the tenant
//! log's head and proofs, and the verdict on a task. Shared by the HTTP routes and MCP.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use shared::audit::signed::{SignedHead, SignedReceipt};
use shared::audit::signer::{Jwks, PublicKey};
use shared::audit::store::{self, ProofError};
use shared::audit::verdict::{self, ConsistencyProof, InclusionProof, Verdict};
use shared::http::ApiError;
use shared::ids::{TaskId, TenantId};
use tokio::sync::Mutex;

use crate::State;
use crate::reads;

/// Verdicts one process computes at once; more get 429.
pub const VERIFICATIONS: usize = 4;

/// How long the published keys are kept in memory (the route is public: it must not
/// reach Postgres on every request).
const KEYS_TTL: Duration = Duration::from_secs(10);

/// Keys and when they were read.
type Fetched = (Instant, Arc<Vec<PublicKey>>);

/// The published keys: every key that signed here, and `RECEIPT_VERIFY_KEYS`.
#[derive(Clone)]
pub struct PublishedKeys {
    retired: Arc<[PublicKey]>,
    cached: Arc<Mutex<Option<Fetched>>>,
}

impl PublishedKeys {
    /// Keys read from Postgres, plus `retired` (`RECEIPT_VERIFY_KEYS`).
    pub fn new(retired: Vec<PublicKey>) -> Self {
        Self {
            retired: retired.into(),
            cached: Arc::default(),
        }
    }

    /// The keys, at most [`KEYS_TTL`] old.
    pub async fn get(&self, state: &State) -> Result<Arc<Vec<PublicKey>>, ApiError> {
        let mut cached = self.cached.lock().await;
        if let Some((at, keys)) = cached.as_ref()
            && at.elapsed() < KEYS_TTL
        {
            return Ok(keys.clone());
        }
        let keys = store::published_keys(&state.pool, &self.retired)
            .await
            .map_err(|e| ApiError::unavailable("postgres", e))?;
        let keys = Arc::new(keys);
        *cached = Some((Instant::now(), keys.clone()));
        Ok(keys)
    }
}

fn db(e: sqlx::Error) -> ApiError {
    ApiError::unavailable("postgres", e)
}

/// The JWKS of `GET /.well-known/axontask/keys`.
pub async fn jwks(state: &State) -> Result<Jwks, ApiError> {
    Ok(Jwks::of(&state.receipt_keys.get(state).await?))
}

/// The tenant's task's receipt; 404 while it runs.
pub async fn receipt(
    state: &State,
    tenant: TenantId,
    task: TaskId,
) -> Result<SignedReceipt, ApiError> {
    let status = reads::status(state, tenant, task).await?;
    match store::receipt(&state.pool, tenant, task)
        .await
        .map_err(db)?
    {
        Some((receipt, _)) => Ok(receipt),
        None if shared::task::TaskState::parse(&status.state).is_some_and(|s| s.is_terminal()) => {
            Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "receipt_not_found",
                format!("task {task} ended before this server issued receipts, so it has none"),
            ))
        }
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "task_not_finished",
            format!(
                "task {task} is {}; its receipt is issued when it ends (follow /mcp/tasks/{task}/stream to wait for the end)",
                status.state
            ),
        )),
    }
}

/// The tenant's latest signed tree head.
pub async fn head(state: &State, tenant: TenantId) -> Result<SignedHead, ApiError> {
    store::latest_head(&state.pool, tenant)
        .await
        .map_err(db)?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "log_empty",
                "no task of this tenant has ended yet; its log starts with the first receipt (heads follow within a second)",
            )
        })
}

fn proof_error(e: ProofError) -> ApiError {
    match e {
        ProofError::NoReceipt(task) => ApiError::new(
            StatusCode::NOT_FOUND,
            "receipt_not_found",
            format!(
                "task {task} has no receipt in this tenant's log (it runs, or it is not this tenant's)"
            ),
        ),
        e @ ProofError::NotYet { .. } => {
            ApiError::new(StatusCode::NOT_FOUND, "not_yet_in_log", e.to_string())
        }
        ProofError::Range(message) => ApiError::bad_request("bad_tree_size", message),
        ProofError::Db(e) => db(e),
    }
}

/// The inclusion proof of the task's receipt in the tree of `size` leaves (default: the
/// latest head's).
pub async fn inclusion(
    state: &State,
    tenant: TenantId,
    task: TaskId,
    size: Option<u64>,
) -> Result<InclusionProof, ApiError> {
    let size = match size {
        Some(size) => size,
        None => head(state, tenant).await?.head.tree_size,
    };
    store::inclusion_proof(&state.pool, tenant, task, size)
        .await
        .map_err(proof_error)
}

/// The consistency proof between two tree sizes.
pub async fn consistency(
    state: &State,
    tenant: TenantId,
    from: u64,
    to: u64,
) -> Result<ConsistencyProof, ApiError> {
    store::consistency_proof(&state.pool, tenant, from, to)
        .await
        .map_err(proof_error)
}

/// The verdict of `axontask verify` on the tenant's task, from what Postgres holds.
pub async fn verify(state: &State, tenant: TenantId, task: TaskId) -> Result<Verdict, ApiError> {
    reads::status(state, tenant, task).await?;
    // A verdict reads and hashes the whole log (up to TASK_MAX_EVENTS events): a few at a
    // time per process.
    let Ok(_running) = state.verifications.clone().try_acquire_owned() else {
        return Err(ApiError::too_many(
            "too_many_verifications",
            "this server is verifying as many tasks as it allows at once; retry in a second",
            1,
        ));
    };
    let keys = state.receipt_keys.get(state).await?;
    let evidence = store::evidence(&state.pool, tenant, task, keys.to_vec(), None)
        .await
        .map_err(db)?;
    Ok(verdict::verify(&evidence))
}
