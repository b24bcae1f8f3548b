//! webhooks: delivers logged events to the URLs tenants subscribed (§3.7), as the role
//! `webhooks`. Events come from `AXON_LOG` through a durable consumer of its own, so the
//! pipeline never waits for a receiver; deliveries and every attempt at them are kept in
//! Postgres and retried with exponential backoff. Targets must be public hosts
//! ([`target`]). Entry point: [`Webhooks::create`], then [`Webhooks::run`].

pub mod deliver;
pub mod intake;
pub mod send;
pub mod store;
pub mod target;

use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::stream::Stream;
use shared::config::WebhookConfig;
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// The role: intake and delivery.
pub struct Webhooks {
    log: Stream,
    consumer: PullConsumer,
    pool: PgPool,
    sender: send::Sender,
    config: WebhookConfig,
}

impl Webhooks {
    /// Makes the `AXON_LOG` consumer and the HTTP client.
    pub async fn create(
        pool: PgPool,
        log: Stream,
        config: WebhookConfig,
    ) -> Result<Self, async_nats::Error> {
        let consumer = intake::consumer(&log).await?;
        let sender = send::Sender::new(config.allow_private, config.timeout)?;
        Ok(Self {
            log,
            consumer,
            pool,
            sender,
            config,
        })
    }

    /// Queues and delivers until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let queued = Notify::new();
        tokio::join!(
            intake::run(
                self.log,
                self.consumer,
                self.pool.clone(),
                &queued,
                shutdown.clone()
            ),
            deliver::run(self.pool, self.sender, self.config, &queued, shutdown),
        );
    }
}
