//! Attempts due deliveries: each is leased, posted, and its attempt recorded with the
//! delivery's new state (delivered; pending again after an exponential wait with jitter;
//! failed after the last attempt). Several processes may deliver at once (the lease uses
//! `FOR UPDATE SKIP LOCKED`).

use std::time::{Duration, Instant};

use rand::Rng;
use shared::config::WebhookConfig;
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::send::Sender;
use crate::store::{self, Attempted, Due};

/// Deliveries attempted at once.
const AT_ONCE: i64 = 64;
/// How often due deliveries are looked for when nothing new was queued.
const LOOK_EVERY: Duration = Duration::from_millis(200);
/// The longest wait between attempts.
const MAX_WAIT: Duration = Duration::from_secs(3600);

/// Delivers until `shutdown`; `queued` wakes it early.
pub async fn run(
    pool: PgPool,
    sender: Sender,
    config: WebhookConfig,
    queued: &Notify,
    shutdown: CancellationToken,
) {
    // A lease outlives any attempt: the timeout, and a margin.
    let lease = config.timeout.as_secs_f64() + 30.0;
    loop {
        match store::take_due(&pool, AT_ONCE, lease).await {
            Ok(due) if !due.is_empty() => {
                let attempts = due.iter().map(|d| attempt(&pool, &sender, &config, d));
                futures::future::join_all(attempts).await;
                continue;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot take due webhook deliveries; retrying"),
        }
        tokio::select! {
            () = queued.notified() => {}
            () = tokio::time::sleep(LOOK_EVERY) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

/// The body of a delivery.
pub fn body(webhook_id: uuid::Uuid, event: &serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({"webhook_id": webhook_id, "event": event}))
        .expect("JSON values serialize")
}

async fn attempt(pool: &PgPool, sender: &Sender, config: &WebhookConfig, due: &Due) {
    let number = due.attempts + 1;
    let started = Instant::now();
    let posted = if due.deleted {
        Err("the webhook was deleted".to_owned())
    } else {
        sender
            .post(&due.url, &due.secret, body(due.webhook_id, &due.event))
            .await
    };
    let duration_ms = i32::try_from(started.elapsed().as_millis()).unwrap_or(i32::MAX);
    let (status_code, error) = match posted {
        Ok(code) if (200..300).contains(&code) => (Some(i32::from(code)), None),
        Ok(code) => (
            Some(i32::from(code)),
            Some(format!("the receiver answered {code}")),
        ),
        Err(reason) => (None, Some(reason)),
    };
    let last = due.deleted || u32::try_from(number).unwrap_or(u32::MAX) >= config.max_attempts;
    let (status, next_in_s) = match &error {
        None => ("delivered", 0.0),
        Some(_) if last => ("failed", 0.0),
        Some(_) => ("pending", wait(config.retry_base, number).as_secs_f64()),
    };
    if let Some(reason) = &error {
        tracing::info!(webhook_id = %due.webhook_id, delivery = %due.id, attempt = number, %reason, status, "webhook delivery failed");
    }
    let attempted = Attempted {
        attempt: number,
        status_code,
        error,
        duration_ms,
        status,
        next_in_s,
    };
    if let Err(e) = store::record(pool, due, &attempted).await {
        // The lease runs out and the delivery is attempted again.
        tracing::warn!(error = %e, delivery = %due.id, "cannot record a webhook attempt");
    }
}

/// The wait after failed attempt `number` (from 1): `base` doubled each time, at most an
/// hour, less up to half of it at random (so receivers that fail together are not retried
/// together).
fn wait(base: Duration, number: i32) -> Duration {
    let doublings = u32::try_from(number - 1).unwrap_or(0).min(20);
    let full = base.saturating_mul(1 << doublings).min(MAX_WAIT);
    full.mul_f64(rand::rng().random_range(0.5..=1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_with_jitter_up_to_an_hour() {
        let base = Duration::from_secs(1);
        for (number, full) in [(1, 1), (2, 2), (3, 4), (10, 512), (30, 3600)] {
            let waited = wait(base, number);
            let full = Duration::from_secs(full);
            assert!(waited <= full && waited >= full / 2, "{number}: {waited:?}");
        }
    }
}
