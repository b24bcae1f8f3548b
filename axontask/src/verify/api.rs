//! The HTTP API as a source: events, receipt, published keys, head and proofs.

use anyhow::{Context, bail};
use reqwest::StatusCode;
use serde::de::DeserializeOwned;
use serde_json::Value;
use shared::audit::signed::{SignedHead, SignedReceipt};
use shared::audit::signer::{Jwks, PublicKey};
use shared::audit::verdict::{ConsistencyProof, Inclusion, InclusionProof};
use shared::events::wire::Envelope;
use shared::ids::TaskId;

/// Events per page.
const PAGE: usize = 1000;

/// An AxonTask API and a key of the tenant.
pub struct Api {
    http: reqwest::Client,
    base: String,
    key: String,
}

/// An answer: the body, or the error's status, code and message.
enum Answer<T> {
    Ok(T),
    Err(StatusCode, String, String),
}

impl Api {
    /// The API at `base` (`https://host` or `http://host:port`), called with `key`.
    pub fn new(base: &str, key: &str) -> anyhow::Result<Self> {
        if !base.starts_with("http://") && !base.starts_with("https://") {
            bail!("--api must be an http:// or https:// URL, not '{base}'");
        }
        Ok(Self {
            http: reqwest::Client::new(),
            base: base.trim_end_matches('/').to_owned(),
            key: key.to_owned(),
        })
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<Answer<T>> {
        let url = format!("{}{path}", self.base);
        let response = self
            .http
            .get(&url)
            .header("X-Api-Key", &self.key)
            .send()
            .await
            .with_context(|| format!("GET {url}"))?;
        let status = response.status();
        if status.is_success() {
            return Ok(Answer::Ok(
                response
                    .json()
                    .await
                    .with_context(|| format!("GET {url}: body"))?,
            ));
        }
        let body: Value = response.json().await.unwrap_or_default();
        let text = |field: &str| body["error"][field].as_str().unwrap_or_default().to_owned();
        Ok(Answer::Err(status, text("code"), text("message")))
    }

    async fn must<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        match self.get(path).await? {
            Answer::Ok(value) => Ok(value),
            Answer::Err(status, code, message) => bail!("GET {path}: {status} {code}: {message}"),
        }
    }

    /// Every event of the task (none if the API has no such task).
    pub async fn events(&self, task: TaskId) -> anyhow::Result<Vec<Envelope>> {
        #[derive(serde::Deserialize)]
        struct Page {
            events: Vec<Envelope>,
        }
        let mut events: Vec<Envelope> = Vec::new();
        loop {
            let since = events.last().map_or(0, |e| e.seq);
            let path = format!("/mcp/tasks/{task}/events?since_seq={since}&limit={PAGE}");
            let page: Page = match self.get(&path).await? {
                Answer::Ok(page) => page,
                Answer::Err(StatusCode::NOT_FOUND, code, _) if code == "task_not_found" => {
                    return Ok(events);
                }
                Answer::Err(status, code, message) => {
                    bail!("GET {path}: {status} {code}: {message}")
                }
            };
            let full = page.events.len() == PAGE;
            events.extend(page.events);
            if !full {
                return Ok(events);
            }
        }
    }

    /// The task's receipt, if it has one.
    pub async fn receipt(&self, task: TaskId) -> anyhow::Result<Option<SignedReceipt>> {
        let path = format!("/mcp/tasks/{task}/receipt");
        match self.get(&path).await? {
            Answer::Ok(receipt) => Ok(Some(receipt)),
            Answer::Err(StatusCode::NOT_FOUND, _, _) => Ok(None),
            Answer::Err(status, code, message) => bail!("GET {path}: {status} {code}: {message}"),
        }
    }

    /// The published keys.
    pub async fn keys(&self) -> anyhow::Result<Vec<PublicKey>> {
        let jwks: Jwks = self.must("/.well-known/axontask/keys").await?;
        Ok(jwks.public_keys())
    }

    /// The latest head, the task's inclusion in it, and the proof from `earlier`.
    pub async fn log(
        &self,
        task: TaskId,
        earlier: Option<SignedHead>,
    ) -> anyhow::Result<super::LogEvidence> {
        let head: SignedHead = match self.get("/api/log/head").await? {
            Answer::Ok(head) => head,
            Answer::Err(StatusCode::NOT_FOUND, _, message) => {
                return Ok((None, earlier.map(|e| (e, Err(message)))));
            }
            Answer::Err(status, code, message) => {
                bail!("GET /api/log/head: {status} {code}: {message}")
            }
        };
        let size = head.head.tree_size;
        let path = format!("/api/log/proof/inclusion?task_id={task}&tree_size={size}");
        let inclusion = match self.get::<InclusionProof>(&path).await? {
            Answer::Ok(proof) => Inclusion::Proof(proof),
            Answer::Err(_, code, message) if code == "not_yet_in_log" => Inclusion::NotYet(message),
            Answer::Err(StatusCode::NOT_FOUND, _, message) => Inclusion::Missing(message),
            Answer::Err(status, code, message) => bail!("GET {path}: {status} {code}: {message}"),
        };
        let earlier = match earlier {
            None => None,
            Some(old) => {
                let from = old.head.tree_size;
                let path = format!("/api/log/proof/consistency?from={from}&to={size}");
                let proof = match self.get::<ConsistencyProof>(&path).await? {
                    Answer::Ok(proof) => Ok(proof),
                    Answer::Err(StatusCode::BAD_REQUEST, _, message) => Err(message),
                    Answer::Err(status, code, message) => {
                        bail!("GET {path}: {status} {code}: {message}")
                    }
                };
                Some((old, proof))
            }
        };
        Ok((Some((head, inclusion)), earlier))
    }
}
