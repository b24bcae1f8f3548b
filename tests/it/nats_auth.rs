//! NATS permissions: no anonymous access, each role only what it does, and a tenant's own
//! services read only their tenant's chained events and signed tree heads.

use std::time::Duration;

use anyhow::Context;
use async_nats::jetstream::consumer::pull;
use e2e::{Cluster, Options, kinds};
use futures::StreamExt;
use serde_json::json;

/// The value after `label` in `nats-user`'s output.
fn field<'a>(output: &'a str, label: &str) -> &'a str {
    output
        .lines()
        .find_map(|line| line.trim().strip_prefix(label))
        .map(|rest| rest.split_whitespace().next().unwrap_or_default())
        .unwrap_or_default()
}

#[tokio::test]
async fn roles_do_their_work_under_their_own_users_and_strangers_are_refused() -> anyhow::Result<()>
{
    let cluster = Cluster::start(Options::default()).await?;
    let shell = cluster
        .start_task(
            json!({"name": "s", "adapter": "shell", "args": {"command": "echo $$; exec sleep 60"}}),
        )
        .await?;
    let (_, stream) = e2e::first_stdout::<i32>(cluster.sse(&shell, "", None).await?).await?;
    assert_eq!(cluster.cancel(&shell).await?.0, 200);
    let rest = e2e::collect_to_end(stream).await?;
    assert_eq!(kinds(&rest).last(), Some(&"canceled"));
    let mock = cluster
        .start_task(json!({"name": "m", "adapter": "mock", "args": {"steps": 3, "interval_ms": 1}}))
        .await?;
    let events = cluster.stream_to_end(&mock).await?;
    cluster.assert_everywhere(&mock, &events, true).await?;
    let log = cluster.nats_log();
    assert!(
        !log.contains("Violation"),
        "a role did something its user may not:\n{log}"
    );

    // No anonymous client, and no wrong password.
    let port = reqwest::Url::parse(&cluster.nats_url)?
        .port()
        .unwrap_or(4222);
    let anonymous = async_nats::connect(format!("nats://127.0.0.1:{port}")).await;
    assert!(anonymous.is_err(), "an anonymous client is refused");
    let wrong = async_nats::ConnectOptions::with_user_and_password("worker".into(), "guess".into())
        .connect(format!("nats://127.0.0.1:{port}"))
        .await;
    assert!(wrong.is_err(), "a wrong password is refused");
    Ok(())
}

#[tokio::test]
async fn a_tenant_user_reads_only_its_own_tenant_s_events() -> anyhow::Result<()> {
    let cluster = Cluster::start(Options::default()).await?;
    let ours = cluster
        .start_task(
            json!({"name": "ours", "adapter": "mock", "args": {"steps": 2, "interval_ms": 1}}),
        )
        .await?;
    let events = cluster.stream_to_end(&ours).await?;
    let tenant_id = events[0]["tenant_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    cluster.create_key("beta").await?;
    let (beta_id,): (uuid::Uuid,) =
        sqlx::query_as("SELECT tenant_id FROM tenants WHERE name = 'beta'")
            .fetch_one(&cluster.pg().await?)
            .await?;

    let output = cluster.cli(&["nats-user", "--tenant", "alpha"]).await?;
    let entry: String = output
        .lines()
        .skip_while(|line| !line.trim_start().starts_with("# tenant alpha"))
        .take_while(|line| !line.trim().is_empty())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(entry.contains("$2a$"), "a bcrypt hash is stored:\n{output}");
    cluster.add_nats_user(&entry)?;
    cluster.expect_nats_violations();
    let (user, password) = (field(&output, "user:"), field(&output, "password:"));
    let inbox = field(&output, "inbox prefix:");
    let consumer = field(&output, "consumer:");
    let port = reqwest::Url::parse(&cluster.nats_url)?
        .port()
        .unwrap_or(4222);
    let connect = || {
        async_nats::ConnectOptions::with_user_and_password(user.into(), password.into())
            .custom_inbox_prefix(inbox)
            .connect(format!("nats://127.0.0.1:{port}"))
    };
    // nats-server reloads its configuration in the background.
    let mut client = None;
    for _ in 0..100 {
        if let Ok(connected) = connect().await {
            client = Some(connected);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let client = client.expect("the tenant user can connect once nats-server reloaded");
    let js = async_nats::jetstream::ContextBuilder::new()
        .timeout(Duration::from_secs(2))
        .build(client.clone());

    // Its own events, through its own consumer.
    let stream = js.get_stream_no_info("AXON_LOG").await?;
    let own = stream
        .create_consumer(pull::Config {
            durable_name: Some(consumer.to_owned()),
            filter_subject: format!("axon.log.{tenant_id}.>"),
            ..Default::default()
        })
        .await?;
    let mut messages = own.fetch().max_messages(100).messages().await?;
    let mut seen = 0;
    while let Some(message) = messages.next().await {
        let message = message.map_err(|e| anyhow::anyhow!(e))?;
        assert!(
            message
                .subject
                .starts_with(&format!("axon.log.{tenant_id}."))
        );
        seen += 1;
    }
    assert_eq!(seen, events.len(), "every event of its tenant");

    // Its own signed tree heads, through its own consumer on AXON_HEADS; not another's.
    let heads = js.get_stream_no_info("AXON_HEADS").await?;
    let own_heads = heads
        .create_consumer(pull::Config {
            durable_name: Some(consumer.to_owned()),
            filter_subject: format!("axon.loghead.{tenant_id}"),
            ..Default::default()
        })
        .await?;
    let head = own_heads
        .fetch()
        .max_messages(1)
        .expires(Duration::from_secs(10))
        .messages()
        .await?
        .next()
        .await
        .context("a signed head of its tenant")?
        .map_err(|e| anyhow::anyhow!(e))?;
    let head: serde_json::Value = serde_json::from_slice(&head.payload)?;
    assert_eq!(head["head"]["tenant_id"], tenant_id.as_str());
    let foreign_heads = heads
        .create_consumer(pull::Config {
            durable_name: Some(consumer.to_owned()),
            filter_subject: format!("axon.loghead.{beta_id}"),
            ..Default::default()
        })
        .await;
    assert!(
        foreign_heads.is_err(),
        "no consumer on another tenant's heads"
    );

    // Another tenant's events: no consumer, no subscription.
    let foreign = stream
        .create_consumer(pull::Config {
            durable_name: Some(consumer.to_owned()),
            filter_subject: format!("axon.log.{beta_id}.>"),
            ..Default::default()
        })
        .await;
    assert!(foreign.is_err(), "no consumer on another tenant's subjects");
    let mut snoop = client.subscribe(format!("axon.log.{beta_id}.>")).await?;
    // Neither commands nor worker events may be published.
    client
        .publish(format!("axon.evt.{tenant_id}.x.stdout"), "forged".into())
        .await?;
    client
        .publish(format!("axon.cmd.{tenant_id}.x.start"), "forged".into())
        .await?;
    client.flush().await?;
    let snooped = tokio::time::timeout(Duration::from_millis(500), snoop.next()).await;
    assert!(
        !matches!(snooped, Ok(Some(_))),
        "no message of another tenant"
    );
    let log = cluster.nats_log();
    for refused in [
        format!("Subscription Violation - Subject \"axon.log.{beta_id}.>\""),
        format!("Publish Violation - Subject \"axon.evt.{tenant_id}.x.stdout\""),
        format!("Publish Violation - Subject \"axon.cmd.{tenant_id}.x.start\""),
    ] {
        assert!(
            log.contains(&refused),
            "nats-server refused {refused}:\n{log}"
        );
    }
    Ok(())
}
