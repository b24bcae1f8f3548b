//! `axontask verify` (§3.10): gathers a task's evidence from the sources given — the HTTP
//! API, an NDJSON export, stream `AXON_LOG`, Postgres — and prints the verdict of
//! [`shared::audit::verdict::verify`]. Exit status: 0 verified, 1 failed, 3 incomplete
//! (nothing wrong, but something could not be checked), 2 bad arguments or a source
//! that cannot be read.

mod api;
mod files;
mod nats;

use std::process::ExitCode;

use anyhow::{Context, bail};
use shared::audit::signed::{SignedHead, SignedReceipt};
use shared::audit::signer::PublicKey;
use shared::audit::store;
use shared::audit::verdict::{
    self, ConsistencyProof, Evidence, Inclusion, Outcome, Status, Verdict,
};
use shared::ids::{TaskId, TenantId};
use sqlx::PgPool;

use crate::cli::VerifyArgs;

/// The log half of the evidence: the latest head with the receipt's inclusion, and the
/// earlier head with the proof from it.
pub type LogEvidence = (
    Option<(SignedHead, Inclusion)>,
    Option<(SignedHead, Result<ConsistencyProof, String>)>,
);

/// Runs the command; the exit status tells the verdict.
pub async fn run(args: VerifyArgs) -> ExitCode {
    // The TLS of https sources; an error means one is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
    match verdict_of(&args).await {
        Ok(verdict) => {
            if args.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&verdict).expect("verdicts serialize")
                );
            } else {
                print_human(&verdict);
            }
            match verdict.verdict {
                Outcome::Verified => ExitCode::SUCCESS,
                Outcome::Failed => ExitCode::from(1),
                Outcome::Incomplete => ExitCode::from(3),
            }
        }
        Err(e) => {
            eprintln!("axontask verify: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn verdict_of(args: &VerifyArgs) -> anyhow::Result<Verdict> {
    let api = match (&args.api, &args.key) {
        (Some(url), Some(key)) => Some(api::Api::new(url, key)?),
        (Some(_), None) => bail!("--api needs --key (an API key of the task's tenant)"),
        _ => None,
    };
    let pool = match &args.database_url {
        Some(url) => Some(
            PgPool::connect(url)
                .await
                .context("connecting to --database-url")?,
        ),
        None => None,
    };
    let receipt: Option<SignedReceipt> = match &args.receipt {
        Some(path) => Some(files::json(path, "a receipt")?),
        None => None,
    };
    let earlier: Option<SignedHead> = match &args.head {
        Some(path) => Some(files::json(path, "a signed head")?),
        None => None,
    };
    let file_events = match &args.file {
        Some(path) => Some(files::events(path)?),
        None => None,
    };
    let task = args
        .task
        .or_else(|| {
            file_events
                .as_ref()
                .and_then(|e| e.first())
                .map(|e| e.task_id)
        })
        .or_else(|| receipt.as_ref().map(|r| r.receipt.task_id))
        .context("--task is required (or give --file or --receipt, which name the task)")?;
    let tenant = match (&pool, args.tenant) {
        (_, Some(tenant)) => Some(tenant),
        (Some(pool), None) => store::tenant_of(pool, task).await?,
        (None, None) => receipt.as_ref().map(|r| r.receipt.tenant_id),
    };

    let events = if let Some(events) = file_events {
        events
    } else if let Some(url) = &args.nats {
        nats::events(url, task, tenant).await?
    } else if let Some(pool) = &pool {
        match tenant {
            Some(tenant) => store::events(pool, tenant, task).await?,
            None => Vec::new(),
        }
    } else if let Some(api) = &api {
        api.events(task).await?
    } else {
        bail!("name a source: --api URL --key K, --database-url URL, --nats URL, or --file F");
    };
    let tenant = tenant.or_else(|| events.first().map(|e| e.tenant_id));
    let receipt = match (receipt, &api, &pool, tenant) {
        (Some(receipt), ..) => Some(receipt),
        (None, Some(api), ..) => api.receipt(task).await?,
        (None, None, Some(pool), Some(tenant)) => {
            store::receipt(pool, tenant, task).await?.map(|(r, _)| r)
        }
        _ => None,
    };
    let keys = keys(args, &api, &pool).await?;
    let (log, earlier) = match (&api, &pool, tenant) {
        (Some(api), ..) => api.log(task, earlier).await?,
        (None, Some(pool), Some(tenant)) => {
            store::log_evidence(pool, tenant, task, earlier).await?
        }
        _ => (
            None,
            earlier.map(|e| {
                (
                    e,
                    Err("no log source (give --api or --database-url)".to_owned()),
                )
            }),
        ),
    };
    Ok(verdict::verify(&Evidence {
        task_id: task,
        events,
        receipt,
        keys,
        log,
        earlier,
    }))
}

/// The keys receipts must verify with: `--keys` if given (pinned by the auditor), else
/// what the API publishes, else what Postgres records plus `RECEIPT_VERIFY_KEYS`.
async fn keys(
    args: &VerifyArgs,
    api: &Option<api::Api>,
    pool: &Option<PgPool>,
) -> anyhow::Result<Vec<PublicKey>> {
    if let Some(source) = &args.keys {
        return files::keys(source).await;
    }
    if let Some(api) = api {
        return api.keys().await;
    }
    if let Some(pool) = pool {
        let retired = std::env::var("RECEIPT_VERIFY_KEYS").unwrap_or_default();
        let retired: Vec<PublicKey> = retired
            .split(',')
            .filter(|x| !x.trim().is_empty())
            .map(PublicKey::parse)
            .collect::<Result<_, _>>()
            .map_err(|e| anyhow::anyhow!("RECEIPT_VERIFY_KEYS: {e}"))?;
        return Ok(store::published_keys(pool, &retired).await?);
    }
    Ok(Vec::new())
}

fn print_human(verdict: &Verdict) {
    let word = match verdict.verdict {
        Outcome::Verified => "VERIFIED",
        Outcome::Failed => "FAILED",
        Outcome::Incomplete => "INCOMPLETE",
    };
    match &verdict.failure {
        Some(f) => {
            let at = f.seq.map(|s| format!(" at seq {s}")).unwrap_or_default();
            println!(
                "{word}: task {}{at} ({}): {}",
                verdict.task_id, f.reason, f.message
            );
        }
        None => println!("{word}: {}", verdict.summary),
    }
    for check in &verdict.checks {
        let status = match check.status {
            Status::Ok => "ok",
            Status::Failed => "FAILED",
            Status::Skipped => "skipped",
            Status::Pending => "pending",
        };
        println!("  {:<12} {:<8} {}", check.name, status, check.detail);
    }
}

/// Parses a tenant id argument.
pub fn tenant_arg(text: &str) -> Result<TenantId, String> {
    text.parse::<uuid::Uuid>()
        .map(TenantId)
        .map_err(|_| format!("'{text}' is not a tenant id (a UUID)"))
}

/// Parses a task id argument.
pub fn task_arg(text: &str) -> Result<TaskId, String> {
    text.parse::<uuid::Uuid>()
        .map(TaskId)
        .map_err(|_| format!("'{text}' is not a task id (a UUID)"))
}
