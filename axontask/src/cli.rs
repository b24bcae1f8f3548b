//! The command line (§3.10).

use clap::{Parser, Subcommand, ValueEnum};

/// AxonTask: durable background tasks for AI agents.
#[derive(Debug, Parser)]
#[command(name = "axontask", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Runs the given roles in this process until SIGINT or SIGTERM.
    Serve {
        /// Comma-separated roles, or `all`.
        #[arg(long, value_delimiter = ',', default_value = "all")]
        roles: Vec<RoleArg>,
    },
    /// Applies the database migrations to DATABASE_URL.
    Migrate,
    /// Manages API keys.
    Keys {
        /// The key operation.
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Prints NATS credentials for a tenant's own services (they may read only that
    /// tenant's `axon.log.{tenant_id}.>`), and the nats.conf entry to add.
    NatsUser {
        /// The tenant's name (made with `keys create`).
        #[arg(long)]
        tenant: String,
    },
    /// Verifies a task for an audit: its hash chain, its signed receipt, and the receipt's
    /// inclusion in the tenant's signed log. Exit 0 verified, 1 failed, 2 bad arguments or
    /// an unreadable source, 3 incomplete.
    Verify(VerifyArgs),
}

/// Where `verify` reads the evidence; events come from the first of --file, --nats,
/// --database-url, --api, and the receipt, keys and log from the others given.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// The task.
    #[arg(long, value_parser = crate::verify::task_arg)]
    pub task: Option<shared::ids::TaskId>,
    /// An AxonTask API (https://host or http://host:port); needs --key.
    #[arg(long)]
    pub api: Option<String>,
    /// An API key of the task's tenant.
    #[arg(long, env = "AXON_API_KEY", hide_env_values = true)]
    pub key: Option<String>,
    /// Postgres, read directly.
    #[arg(long)]
    pub database_url: Option<String>,
    /// NATS, to read the task's events from stream AXON_LOG (as a user that may create
    /// consumers on it, such as an operator's).
    #[arg(long)]
    pub nats: Option<String>,
    /// The task's tenant (narrows the AXON_LOG read to its subjects).
    #[arg(long, value_parser = crate::verify::tenant_arg)]
    pub tenant: Option<shared::ids::TenantId>,
    /// An NDJSON export of the task's events.
    #[arg(long)]
    pub file: Option<String>,
    /// The task's receipt, as saved from GET /mcp/tasks/{id}/receipt.
    #[arg(long)]
    pub receipt: Option<String>,
    /// The published keys to trust: a JWKS file, or its URL.
    #[arg(long)]
    pub keys: Option<String>,
    /// A head saved earlier (from GET /api/log/head): checks today's head extends it.
    #[arg(long)]
    pub head: Option<String>,
    /// Prints the verdict as JSON.
    #[arg(long)]
    pub json: bool,
}

/// API key operations.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Creates a key (and its tenant if needed); the last line printed is the key.
    Create {
        /// The tenant's name.
        #[arg(long)]
        tenant: String,
        /// Comma-separated scopes: tasks:read, tasks:write, tasks:*, *.
        #[arg(long, default_value = "*")]
        scopes: String,
        /// The tenant's plan (trial, entry, pro, enterprise); new tenants get entry.
        #[arg(long)]
        plan: Option<String>,
        /// A name for the key.
        #[arg(long, default_value = "default")]
        name: String,
    },
}

/// A role, or all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RoleArg {
    /// Every role.
    All,
    /// Starts and cancels tasks.
    CommandApi,
    /// Status, events and SSE.
    QueryApi,
    /// Runs tasks.
    Worker,
    /// Writes the log.
    Projector,
    /// The MCP server at /mcp.
    Mcp,
    /// Delivers events to tenants' webhooks.
    Webhooks,
}

/// A role to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// See [`RoleArg::CommandApi`].
    CommandApi,
    /// See [`RoleArg::QueryApi`].
    QueryApi,
    /// See [`RoleArg::Worker`].
    Worker,
    /// See [`RoleArg::Projector`].
    Projector,
    /// See [`RoleArg::Mcp`].
    Mcp,
    /// See [`RoleArg::Webhooks`].
    Webhooks,
}

/// Expands `all` and removes repeats.
pub fn roles(args: &[RoleArg]) -> Vec<Role> {
    let all = [
        Role::CommandApi,
        Role::QueryApi,
        Role::Worker,
        Role::Projector,
        Role::Mcp,
        Role::Webhooks,
    ];
    all.into_iter()
        .filter(|role| {
            args.iter().any(|arg| match arg {
                RoleArg::All => true,
                RoleArg::CommandApi => *role == Role::CommandApi,
                RoleArg::QueryApi => *role == Role::QueryApi,
                RoleArg::Worker => *role == Role::Worker,
                RoleArg::Projector => *role == Role::Projector,
                RoleArg::Mcp => *role == Role::Mcp,
                RoleArg::Webhooks => *role == Role::Webhooks,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_expands_and_lists_dedupe() {
        assert_eq!(roles(&[RoleArg::All]).len(), 6);
        assert_eq!(
            roles(&[RoleArg::Worker, RoleArg::Worker, RoleArg::Projector]),
            vec![Role::Worker, Role::Projector]
        );
        let parsed = Cli::try_parse_from(["axontask", "serve", "--roles", "worker,query-api"]);
        assert!(parsed.is_ok());
        assert!(Cli::try_parse_from(["axontask", "serve", "--roles", "chef"]).is_err());
    }
}
