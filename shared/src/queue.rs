//! The work queue: one durable pull consumer per tenant on that tenant's start commands,
//! so workers can take tenants in turn and a tenant with a long queue delays nobody else.
//!
//! command-api makes a tenant's consumer before it publishes the tenant's first start, with
//! the plan's concurrency, delivering what is published from then on (every process that
//! publishes a start has made sure of the consumer first, so none is missed, and starts
//! older than the consumer, from before an upgrade, are not run again). A worker that
//! hears of a start whose tenant has no consumer (the stream was made anew) makes one that
//! delivers from the start of `AXON`.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};

use crate::ids::TenantId;

/// The header of a start command that carries its priority.
pub const PRIORITY_HEADER: &str = "Axon-Priority";
/// The priority of a task started without one.
pub const DEFAULT_PRIORITY: u8 = 4;
/// The highest priority; higher runs sooner.
pub const MAX_PRIORITY: u8 = 9;
/// Subjects every start command is published on (workers hear of new work here).
pub const START_FILTER: &str = "axon.cmd.*.*.start";
/// Names of the tenant consumers: this prefix, then the tenant id.
const PREFIX: &str = "workers-";

/// The name of `tenant`'s consumer.
pub fn consumer_name(tenant: TenantId) -> String {
    format!("{PREFIX}{tenant}")
}

/// The tenant whose consumer is named `name`, if it is one.
pub fn tenant_of(name: &str) -> Option<TenantId> {
    name.strip_prefix(PREFIX)?.parse().ok()
}

/// The tenant of a start command's subject (`axon.cmd.{tenant}.{task}.start`).
pub fn tenant_of_subject(subject: &str) -> Option<TenantId> {
    subject.split('.').nth(2)?.parse().ok()
}

/// Tasks of a tenant that may run at once when no plan limits them (`LIMITS_ENABLED=false`,
/// or a consumer a worker made again before command-api applied the plan).
pub const UNLIMITED: u32 = 10_000;

/// The config of `tenant`'s consumer: `ack_wait` is `WORKER_ACK_WAIT_S`; `concurrency`
/// bounds its commands delivered and not acked, so no more of its tasks run at once;
/// `deliver` says where a new consumer starts.
pub fn consumer_config(
    tenant: TenantId,
    ack_wait: Duration,
    concurrency: u32,
    deliver: DeliverPolicy,
) -> pull::Config {
    pull::Config {
        durable_name: Some(consumer_name(tenant)),
        filter_subject: format!("axon.cmd.{tenant}.*.start"),
        deliver_policy: deliver,
        ack_policy: AckPolicy::Explicit,
        ack_wait,
        max_ack_pending: i64::from(concurrency),
        ..Default::default()
    }
}

/// The priority a start command carries (the default when it has none or a bad one).
pub fn priority(headers: Option<&HeaderMap>) -> u8 {
    headers
        .and_then(|h| h.get(PRIORITY_HEADER))
        .and_then(|v| v.as_str().parse::<u8>().ok())
        .filter(|p| *p <= MAX_PRIORITY)
        .unwrap_or(DEFAULT_PRIORITY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_subjects_name_their_tenant() {
        let tenant = TenantId(uuid::Uuid::now_v7());
        assert_eq!(tenant_of(&consumer_name(tenant)), Some(tenant));
        assert_eq!(tenant_of("workers"), None);
        assert_eq!(tenant_of("projector-1"), None);
        let subject = crate::names::start_subject(tenant, crate::ids::TaskId::new());
        assert_eq!(tenant_of_subject(&subject), Some(tenant));
        assert_eq!(tenant_of_subject("axon.cmd.x"), None);
    }

    #[test]
    fn priority_is_read_or_defaulted() {
        let mut headers = HeaderMap::new();
        assert_eq!(priority(None), DEFAULT_PRIORITY);
        assert_eq!(priority(Some(&headers)), DEFAULT_PRIORITY);
        headers.insert(PRIORITY_HEADER, "9");
        assert_eq!(priority(Some(&headers)), 9);
        headers.insert(PRIORITY_HEADER, "10");
        assert_eq!(priority(Some(&headers)), DEFAULT_PRIORITY);
    }
}
