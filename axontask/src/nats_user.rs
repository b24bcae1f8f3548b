//! `axontask nats-user --tenant NAME`: NATS credentials for a tenant's own services, which
//! may read only their tenant's chained events (`axon.log.{tenant_id}.>`) and signed tree
//! heads (`axon.loghead.{tenant_id}`), each through one durable consumer of their own (on
//! `AXON_LOG` and `AXON_HEADS`), and publish nothing else.

use anyhow::Context;
use rand::RngCore;
use sqlx::PgPool;
use uuid::Uuid;

/// bcrypt's cost for the stored password (nats-server checks it at each connect).
const COST: u32 = 11;

/// What a tenant's services connect with.
struct TenantUser {
    user: String,
    password: String,
    consumer: String,
    inbox: String,
    filter: String,
    heads: String,
}

impl TenantUser {
    fn new(tenant_id: Uuid) -> Self {
        let id = tenant_id.simple();
        let mut secret = [0u8; 32];
        rand::rng().fill_bytes(&mut secret);
        Self {
            user: format!("tenant-{id}"),
            password: hex::encode(secret),
            consumer: format!("tenant-{id}"),
            inbox: format!("_INBOX_{id}"),
            filter: format!("axon.log.{tenant_id}.>"),
            heads: format!("axon.loghead.{tenant_id}"),
        }
    }

    /// The entry for the `users` list of nats.conf: the password as a bcrypt hash, and
    /// exactly the subjects its one consumer needs.
    fn config(&self, name: &str, hash: &str) -> String {
        let (user, consumer, inbox, filter, heads) = (
            &self.user,
            &self.consumer,
            &self.inbox,
            &self.filter,
            &self.heads,
        );
        format!(
            r#"    # tenant {name}: reads {filter} and {heads} through consumers {consumer} of
    # AXON_LOG and AXON_HEADS
    {{ user: "{user}", password: "{hash}", permissions: {{
      publish: ["$JS.API.INFO",
                "$JS.API.CONSUMER.CREATE.AXON_LOG.{consumer}.{filter}",
                "$JS.API.CONSUMER.INFO.AXON_LOG.{consumer}",
                "$JS.API.CONSUMER.DELETE.AXON_LOG.{consumer}",
                "$JS.API.CONSUMER.MSG.NEXT.AXON_LOG.{consumer}",
                "$JS.ACK.AXON_LOG.{consumer}.>",
                "$JS.API.CONSUMER.CREATE.AXON_HEADS.{consumer}.{heads}",
                "$JS.API.CONSUMER.INFO.AXON_HEADS.{consumer}",
                "$JS.API.CONSUMER.DELETE.AXON_HEADS.{consumer}",
                "$JS.API.CONSUMER.MSG.NEXT.AXON_HEADS.{consumer}",
                "$JS.ACK.AXON_HEADS.{consumer}.>"]
      subscribe: ["{inbox}.>"]
    }} }}"#
        )
    }
}

/// Prints the credentials and the nats.conf entry for tenant `name` (made with
/// `axontask keys create`).
pub async fn create(pool: &PgPool, name: &str) -> anyhow::Result<()> {
    let row: Option<(Uuid,)> = sqlx::query_as("SELECT tenant_id FROM tenants WHERE name = $1")
        .bind(name)
        .fetch_optional(pool)
        .await
        .context("reading the tenant (did you run `axontask migrate`?)")?;
    let (tenant_id,) = row.with_context(|| {
        format!("no tenant named '{name}'; create it with `axontask keys create --tenant {name}`")
    })?;
    let tenant = TenantUser::new(tenant_id);
    let hash = bcrypt::hash_with_result(&tenant.password, COST)
        .context("hashing the password")?
        .format_for_version(bcrypt::Version::TwoA);
    println!(
        "1. Add this entry to the users list of nats.conf (below the line about tenant users),\n   then reload nats-server (nats-server --signal reload, or SIGHUP):\n"
    );
    println!("{}\n", tenant.config(name, &hash));
    println!("2. Give the tenant's services these settings (the password is shown only now):\n");
    println!("   user:          {}", tenant.user);
    println!("   password:      {}", tenant.password);
    println!(
        "   inbox prefix:  {}  (the client's custom inbox prefix)",
        tenant.inbox
    );
    println!(
        "   consumer:      {} on stream AXON_LOG, durable, filter {}",
        tenant.consumer, tenant.filter
    );
    println!(
        "   heads:         {} on stream AXON_HEADS, durable, filter {} (signed tree heads)",
        tenant.consumer, tenant.heads
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_entry_names_only_the_tenant_s_subjects() {
        let tenant_id = Uuid::now_v7();
        let tenant = TenantUser::new(tenant_id);
        let entry = tenant.config("acme", "$2a$11$hash");
        assert!(entry.contains(&format!(
            "CONSUMER.CREATE.AXON_LOG.tenant-{}.axon.log.{tenant_id}.>",
            tenant_id.simple()
        )));
        assert!(!entry.contains("axon.cmd") && !entry.contains("axon.evt"));
        assert!(!entry.contains(&tenant.password), "only the hash is stored");
        assert_eq!(tenant.password.len(), 64);
    }
}
