//! Webhooks and their deliveries in Postgres. Every query names the tenant.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

/// Webhooks one tenant may have.
pub const MAX_PER_TENANT: i64 = 20;

/// A webhook as its tenant sees it (never its secret).
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Webhook {
    /// Its id.
    pub id: Uuid,
    /// Where deliveries go.
    pub url: String,
    /// The event kinds delivered.
    pub events: Vec<String>,
    /// When it was made.
    pub created_at: DateTime<Utc>,
}

/// Makes a webhook, unless the tenant has [`MAX_PER_TENANT`] already (then `None`).
pub async fn create(
    pool: &PgPool,
    tenant: Uuid,
    url: &str,
    events: &[String],
    secret: &str,
) -> Result<Option<Webhook>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    // One maker at a time per tenant, so the count holds.
    sqlx::query("SELECT 1 FROM tenants WHERE tenant_id = $1 FOR UPDATE")
        .bind(tenant)
        .execute(&mut *tx)
        .await?;
    let count: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM webhooks WHERE tenant_id = $1 AND deleted_at IS NULL",
    )
    .bind(tenant)
    .fetch_one(&mut *tx)
    .await?;
    if count >= MAX_PER_TENANT {
        return Ok(None);
    }
    let webhook: Webhook = sqlx::query_as(
        "INSERT INTO webhooks (id, tenant_id, url, events, secret) VALUES ($1, $2, $3, $4, $5)
         RETURNING id, url, events, created_at",
    )
    .bind(Uuid::now_v7())
    .bind(tenant)
    .bind(url)
    .bind(events)
    .bind(secret)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Some(webhook))
}

/// The tenant's webhooks, oldest first.
pub async fn list(pool: &PgPool, tenant: Uuid) -> Result<Vec<Webhook>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, url, events, created_at FROM webhooks
         WHERE tenant_id = $1 AND deleted_at IS NULL ORDER BY created_at, id",
    )
    .bind(tenant)
    .fetch_all(pool)
    .await
}

/// Deletes a webhook and ends its pending deliveries; false if the tenant has no such one.
pub async fn delete(pool: &PgPool, tenant: Uuid, id: Uuid) -> Result<bool, sqlx::Error> {
    let deleted = sqlx::query(
        "WITH deleted AS (
             UPDATE webhooks SET deleted_at = now()
             WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL RETURNING id),
         ended AS (
             UPDATE webhook_deliveries SET status = 'failed', last_error = 'the webhook was deleted'
             WHERE tenant_id = $1 AND webhook_id IN (SELECT id FROM deleted) AND status = 'pending')
         SELECT count(*) FROM deleted",
    )
    .bind(tenant)
    .bind(id)
    .fetch_one(pool)
    .await;
    let deleted: i64 = sqlx::Row::try_get(&deleted?, 0)?;
    Ok(deleted == 1)
}

/// A live webhook's URL and secret.
pub async fn target(
    pool: &PgPool,
    tenant: Uuid,
    id: Uuid,
) -> Result<Option<(String, String)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT url, secret FROM webhooks WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL",
    )
    .bind(tenant)
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// Logged events, as columns.
#[derive(Debug, Default)]
pub struct Logged {
    /// Their tenants.
    pub tenants: Vec<Uuid>,
    /// Their tasks.
    pub tasks: Vec<Uuid>,
    /// Their `seq`.
    pub seqs: Vec<i64>,
    /// Their kinds.
    pub kinds: Vec<String>,
    /// The envelopes.
    pub events: Vec<Value>,
}

/// The kinds each of `tenants` has a live webhook for, as (tenant, kind).
pub async fn subscriptions(
    pool: &PgPool,
    tenants: &[Uuid],
) -> Result<HashSet<(Uuid, String)>, sqlx::Error> {
    if tenants.is_empty() {
        return Ok(HashSet::new());
    }
    let rows: Vec<(Uuid, String)> = sqlx::query_as(
        "SELECT DISTINCT tenant_id, unnest(events) FROM webhooks
         WHERE tenant_id = ANY ($1) AND deleted_at IS NULL",
    )
    .bind(tenants)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().collect())
}

/// Queues a delivery of each event to each live webhook of its tenant that subscribes to
/// its kind (once: a delivery exists at most once per webhook, task and `seq`).
pub async fn enqueue(pool: &PgPool, logged: Logged) -> Result<u64, sqlx::Error> {
    let queued = sqlx::query(
        "INSERT INTO webhook_deliveries
             (id, tenant_id, webhook_id, task_id, seq, status, attempts, next_attempt, event)
         SELECT gen_random_uuid(), e.tenant_id, w.id, e.task_id, e.seq, 'pending', 0, now(), e.event
         FROM UNNEST($1::uuid[], $2::uuid[], $3::bigint[], $4::text[], $5::jsonb[])
              AS e (tenant_id, task_id, seq, kind, event)
         JOIN webhooks w ON w.tenant_id = e.tenant_id AND w.deleted_at IS NULL
                        AND e.kind = ANY (w.events)
         ON CONFLICT (webhook_id, task_id, seq) DO NOTHING",
    )
    .bind(logged.tenants)
    .bind(logged.tasks)
    .bind(logged.seqs)
    .bind(logged.kinds)
    .bind(logged.events)
    .execute(pool)
    .await?;
    Ok(queued.rows_affected())
}

/// A delivery taken to be attempted (no `Debug`: it holds the secret).
#[derive(sqlx::FromRow)]
pub struct Due {
    /// The delivery.
    pub id: Uuid,
    /// Its tenant.
    pub tenant_id: Uuid,
    /// Its webhook.
    pub webhook_id: Uuid,
    /// Attempts made so far.
    pub attempts: i32,
    /// The envelope to deliver.
    pub event: Value,
    /// The webhook's URL.
    pub url: String,
    /// The webhook's secret.
    pub secret: String,
    /// The webhook was deleted: the delivery ends.
    pub deleted: bool,
}

/// Takes up to `limit` due deliveries, at most `per_webhook` of each webhook and none of
/// the webhooks in `busy`, leasing them for `lease_s` seconds (another process takes them
/// again after that, should this one die mid-attempt).
pub async fn take_due(
    pool: &PgPool,
    limit: usize,
    per_webhook: usize,
    busy: &[Uuid],
    lease_s: f64,
) -> Result<Vec<Due>, sqlx::Error> {
    sqlx::query_as(
        "UPDATE webhook_deliveries d SET next_attempt = now() + $4 * interval '1 second'
         FROM webhooks w,
              (SELECT id FROM webhook_deliveries
               WHERE id IN (SELECT id FROM (
                         SELECT id, row_number() OVER (PARTITION BY webhook_id ORDER BY next_attempt) AS n
                         FROM webhook_deliveries
                         WHERE status = 'pending' AND next_attempt <= now()
                           AND webhook_id <> ALL ($3)) c
                     WHERE c.n <= $2)
               ORDER BY next_attempt LIMIT $1 FOR UPDATE SKIP LOCKED) due
         WHERE d.id = due.id AND w.id = d.webhook_id AND w.tenant_id = d.tenant_id
         RETURNING d.id, d.tenant_id, d.webhook_id, d.attempts, d.event, w.url, w.secret,
                   w.deleted_at IS NOT NULL AS deleted",
    )
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .bind(i64::try_from(per_webhook).unwrap_or(i64::MAX))
    .bind(busy)
    .bind(lease_s)
    .fetch_all(pool)
    .await
}

/// Deletes deliveries (and their attempts) that ended more than `days` days ago.
pub async fn prune(pool: &PgPool, days: i32) -> Result<u64, sqlx::Error> {
    let pruned = sqlx::query(
        "DELETE FROM webhook_deliveries
         WHERE status <> 'pending' AND created_at < now() - $1 * interval '1 day'",
    )
    .bind(days)
    .execute(pool)
    .await?;
    Ok(pruned.rows_affected())
}

/// What became of one attempt.
#[derive(Debug)]
pub struct Attempted {
    /// Its number, from 1.
    pub attempt: i32,
    /// The HTTP status, if the receiver answered.
    pub status_code: Option<i32>,
    /// Why it failed, if it did.
    pub error: Option<String>,
    /// How long it took.
    pub duration_ms: i32,
    /// `delivered`, `failed` (no more attempts) or `pending` (another at `next_in_s`).
    pub status: &'static str,
    /// Seconds until the next attempt, when pending.
    pub next_in_s: f64,
}

/// Records an attempt and the delivery's new state, in one statement.
pub async fn record(pool: &PgPool, due: &Due, attempted: &Attempted) -> Result<(), sqlx::Error> {
    sqlx::query(
        "WITH attempt AS (
             INSERT INTO webhook_attempts (delivery_id, tenant_id, attempt, status_code, error, duration_ms)
             VALUES ($1, $2, $3, $4, $5, $6))
         UPDATE webhook_deliveries SET attempts = $3, status = $7, last_error = $5,
             next_attempt = now() + $8 * interval '1 second',
             delivered_at = CASE WHEN $7 = 'delivered' THEN now() END
         WHERE id = $1 AND tenant_id = $2",
    )
    .bind(due.id)
    .bind(due.tenant_id)
    .bind(attempted.attempt)
    .bind(attempted.status_code)
    .bind(&attempted.error)
    .bind(attempted.duration_ms)
    .bind(attempted.status)
    .bind(attempted.next_in_s)
    .execute(pool)
    .await?;
    Ok(())
}
