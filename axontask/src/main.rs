//! The `axontask` binary: runs any set of roles (`serve`), applies migrations (`migrate`),
//! creates API keys (`keys create`) and tenants' NATS users (`nats-user`), and verifies
//! tasks for auditors (`verify`). Configuration
//! comes from the environment.

mod cli;
mod headers;
mod health;
mod http_server;
mod keys;
mod limits;
mod nats_user;
mod serve;
mod verify;

use anyhow::Context;
use clap::Parser;
use cli::{Cli, Command, KeysCommand};
use shared::config::Config;
use sqlx::PgPool;

/// mimalloc instead of the system allocator: every event, request and message allocates,
/// and glibc malloc cost an eighth of all CPU under many short tasks.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // Configuration errors stop the process before anything else, naming the variable.
    let result = match cli.command {
        Command::Serve { roles } => match Config::from_env() {
            Ok(config) => {
                init_tracing();
                let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
                    .install_recorder()
                    .context("installing the metrics recorder");
                match metrics {
                    Ok(handle) => serve::run(config, &cli::roles(&roles), handle).await,
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(anyhow::anyhow!("configuration: {e}")),
        },
        Command::Migrate => {
            with_pool(|pool| async move {
                shared::MIGRATOR
                    .run(&pool)
                    .await
                    .context("applying migrations")?;
                println!("migrations applied");
                Ok(())
            })
            .await
        }
        Command::Keys {
            command:
                KeysCommand::Create {
                    tenant,
                    scopes,
                    plan,
                    name,
                },
        } => {
            with_pool(|pool| async move {
                keys::create(&pool, &tenant, &scopes, plan.as_deref(), &name).await
            })
            .await
        }
        Command::NatsUser { tenant } => {
            with_pool(|pool| async move { nats_user::create(&pool, &tenant).await }).await
        }
        Command::Verify(args) => return verify::run(args).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("axontask: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn with_pool<F, Fut>(run: F) -> anyhow::Result<()>
where
    F: FnOnce(PgPool) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let url = Config::database_url_from_env().map_err(|e| anyhow::anyhow!("configuration: {e}"))?;
    let pool = PgPool::connect(&url)
        .await
        .context("connecting to DATABASE_URL")?;
    run(pool).await
}

fn init_tracing() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
}
