//! `axontask keys create`: a tenant (made if needed) and a new API key for it.

use anyhow::{Context, bail};
use shared::auth;
use sqlx::PgPool;
use uuid::Uuid;

const PLANS: [&str; 4] = ["trial", "entry", "pro", "enterprise"];

/// Creates the key and prints it last.
pub async fn create(
    pool: &PgPool,
    tenant: &str,
    scopes: &str,
    plan: Option<&str>,
    name: &str,
) -> anyhow::Result<()> {
    let scopes: Vec<String> = scopes.split(',').map(|s| s.trim().to_owned()).collect();
    if let Some(bad) = scopes.iter().find(|s| !auth::SCOPES.contains(&s.as_str())) {
        bail!(
            "unknown scope '{bad}'; use one or more of {}",
            auth::SCOPES.join(", ")
        );
    }
    if let Some(bad) = plan.filter(|p| !PLANS.contains(p)) {
        bail!("unknown plan '{bad}'; use one of {}", PLANS.join(", "));
    }
    if tenant.trim().is_empty() {
        bail!("--tenant must not be empty");
    }
    let mut tx = pool.begin().await?;
    let (tenant_id,): (Uuid,) = sqlx::query_as(
        "INSERT INTO tenants (tenant_id, name, plan) VALUES ($1, $2, COALESCE($3, 'entry'))
         ON CONFLICT (name) DO UPDATE SET plan = COALESCE($3, tenants.plan)
         RETURNING tenant_id",
    )
    .bind(Uuid::now_v7())
    .bind(tenant)
    .bind(plan)
    .fetch_one(&mut *tx)
    .await
    .context("creating the tenant (did you run `axontask migrate`?)")?;
    let key = auth::generate_key();
    let key_id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO api_keys (id, tenant_id, name, key_hash, scopes) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(key_id)
    .bind(tenant_id)
    .bind(name)
    .bind(auth::hash_key(&key))
    .bind(&scopes)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    println!(
        "tenant {tenant} ({tenant_id}); key {key_id} with scopes {}",
        scopes.join(",")
    );
    println!("{key}");
    Ok(())
}
