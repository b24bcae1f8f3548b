//! Attempts due deliveries: each is leased, posted, and its attempt recorded with the
//! delivery's new state (delivered; pending again after an exponential wait with jitter;
//! failed after the last attempt). Attempts run side by side, [`AT_ONCE`] at most and
//! [`PER_WEBHOOK`] per webhook, so one slow receiver cannot hold up the others; more are
//! taken as soon as one ends. Several processes may deliver at once (the lease uses
//! `FOR UPDATE SKIP LOCKED`). Finished deliveries are pruned after [`KEEP_DAYS`] days.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use rand::Rng;
use shared::config::WebhookConfig;
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::send::Sender;
use crate::store::{self, Attempted, Due};

/// Attempts in flight at once.
const AT_ONCE: usize = 64;
/// Attempts in flight at once to one webhook.
const PER_WEBHOOK: usize = 4;
/// How often due deliveries are looked for when nothing new was queued.
const LOOK_EVERY: Duration = Duration::from_millis(200);
/// The longest wait between attempts.
const MAX_WAIT: Duration = Duration::from_secs(3600);
/// Days finished deliveries and their attempts are kept.
pub const KEEP_DAYS: i32 = 7;
/// How often finished deliveries are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Delivers until `shutdown` (attempts in flight then finish); `queued` wakes it early.
pub async fn run(
    pool: PgPool,
    sender: Sender,
    config: WebhookConfig,
    queued: &Notify,
    shutdown: CancellationToken,
) {
    // A lease outlives any attempt: the timeout, and a margin.
    let lease = config.timeout.as_secs_f64() + 30.0;
    let mut in_flight = FuturesUnordered::new();
    let mut per_webhook: HashMap<Uuid, usize> = HashMap::new();
    let mut pruned = Instant::now() - PRUNE_EVERY;
    while !shutdown.is_cancelled() {
        if pruned.elapsed() >= PRUNE_EVERY {
            pruned = Instant::now();
            if let Err(e) = store::prune(&pool, KEEP_DAYS).await {
                tracing::warn!(error = %e, "cannot prune finished webhook deliveries");
            }
        }
        let room = AT_ONCE - in_flight.len();
        if room > 0 {
            let busy: Vec<Uuid> = per_webhook
                .iter()
                .filter(|(_, n)| **n >= PER_WEBHOOK)
                .map(|(id, _)| *id)
                .collect();
            match store::take_due(&pool, room, PER_WEBHOOK, &busy, lease).await {
                Ok(due) => {
                    for due in due {
                        *per_webhook.entry(due.webhook_id).or_default() += 1;
                        in_flight.push(attempt(&pool, &sender, &config, due));
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot take due webhook deliveries; retrying");
                }
            }
        }
        tokio::select! {
            Some(webhook) = in_flight.next() => {
                if let Some(n) = per_webhook.get_mut(&webhook) {
                    *n -= 1;
                    if *n == 0 {
                        per_webhook.remove(&webhook);
                    }
                }
            }
            () = queued.notified() => {}
            () = tokio::time::sleep(LOOK_EVERY) => {}
            () = shutdown.cancelled() => {}
        }
    }
    while in_flight.next().await.is_some() {}
}

/// The body of a delivery.
pub fn body(webhook_id: Uuid, event: &serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({"webhook_id": webhook_id, "event": event}))
        .expect("JSON values serialize")
}

/// Attempts `due` and records it; the webhook it was for.
async fn attempt(pool: &PgPool, sender: &Sender, config: &WebhookConfig, due: Due) -> Uuid {
    let number = due.attempts + 1;
    let started = Instant::now();
    let posted = if due.deleted {
        Err("the webhook was deleted".to_owned())
    } else {
        sender
            .post(
                &due.url,
                &due.secret,
                due.id,
                body(due.webhook_id, &due.event),
            )
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
    // A few tries: a delivery whose result is lost is sent again when its lease ends.
    for pause in [0, 100, 1000] {
        tokio::time::sleep(Duration::from_millis(pause)).await;
        match store::record(pool, &due, &attempted).await {
            Ok(()) => break,
            Err(e) => {
                tracing::warn!(error = %e, delivery = %due.id, "cannot record a webhook attempt")
            }
        }
    }
    due.webhook_id
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
