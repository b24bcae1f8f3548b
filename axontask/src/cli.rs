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
}

/// Expands `all` and removes repeats.
pub fn roles(args: &[RoleArg]) -> Vec<Role> {
    let all = [
        Role::CommandApi,
        Role::QueryApi,
        Role::Worker,
        Role::Projector,
        Role::Mcp,
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
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_expands_and_lists_dedupe() {
        assert_eq!(roles(&[RoleArg::All]).len(), 5);
        assert_eq!(
            roles(&[RoleArg::Worker, RoleArg::Worker, RoleArg::Projector]),
            vec![Role::Worker, Role::Projector]
        );
        let parsed = Cli::try_parse_from(["axontask", "serve", "--roles", "worker,query-api"]);
        assert!(parsed.is_ok());
        assert!(Cli::try_parse_from(["axontask", "serve", "--roles", "chef"]).is_err());
    }
}
