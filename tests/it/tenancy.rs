//! Tenancy across every route: another tenant's tasks, keys, members and webhooks are 404s
//! wherever they are named, lists and usage show nothing of them, and a viewer and a
//! read-only key get 403 on every write.

use anyhow::Context as _;
use e2e::{Cluster, Options};
use reqwest::Method;
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery staple";

async fn register(cluster: &Cluster, email: &str) -> anyhow::Result<Value> {
    let (status, body) = cluster
        .post(
            "/auth/register",
            None,
            &json!({"email": email, "password": PASSWORD}),
        )
        .await?;
    anyhow::ensure!(status == 201, "register answered {status}: {body}");
    Ok(body)
}

/// Every write route, with the ids it names.
fn writes(task: &str, key: &str, hook: &str, user: &str) -> Vec<(Method, String, Option<Value>)> {
    vec![
        (
            Method::POST,
            "/mcp/start_task".into(),
            Some(json!({"name": "x", "adapter": "mock"})),
        ),
        (Method::POST, format!("/mcp/tasks/{task}/cancel"), None),
        (
            Method::POST,
            "/api/keys".into(),
            Some(json!({"name": "k", "scopes": ["tasks:read"]})),
        ),
        (Method::DELETE, format!("/api/keys/{key}"), None),
        (
            Method::POST,
            "/api/webhooks".into(),
            Some(json!({"url": "http://127.0.0.1:9/hook"})),
        ),
        (Method::DELETE, format!("/api/webhooks/{hook}"), None),
        (Method::POST, format!("/api/webhooks/{hook}/test"), None),
        (
            Method::POST,
            "/api/members".into(),
            Some(json!({"email": "nobody@example.com", "role": "member"})),
        ),
        (
            Method::PATCH,
            format!("/api/members/{user}"),
            Some(json!({"role": "admin"})),
        ),
        (Method::DELETE, format!("/api/members/{user}"), None),
    ]
}

#[tokio::test]
async fn other_tenants_ids_are_404_everywhere_and_readers_cannot_write() -> anyhow::Result<()> {
    let cluster = Cluster::start(Options {
        env: vec![("WEBHOOK_ALLOW_PRIVATE", "true")],
        ..Options::default()
    })
    .await?;
    // Tenant A: a registered owner, with a finished task, a key, a webhook and a member.
    let owner = register(&cluster, "owner@example.com").await?;
    let owner_token = owner["access_token"].as_str().context("token")?.to_owned();
    let tenant = owner["tenant_id"].as_str().context("tenant")?.to_owned();
    let viewer = register(&cluster, "viewer@example.com").await?;
    let viewer_id = viewer["user_id"].as_str().context("user")?.to_owned();
    let (status, _) = cluster
        .call(
            Method::POST,
            "/api/members",
            &owner_token,
            Some(json!({"email": "viewer@example.com", "role": "viewer"})),
        )
        .await?;
    assert_eq!(status, 201);
    let (status, started) = cluster
        .call(
            Method::POST,
            "/mcp/start_task",
            &owner_token,
            Some(json!({"name": "a", "adapter": "mock", "args": {"steps": 1}})),
        )
        .await?;
    assert_eq!(status, 200, "{started}");
    let task = started["task_id"].as_str().context("task")?.to_owned();
    let (status, key) = cluster
        .call(
            Method::POST,
            "/api/keys",
            &owner_token,
            Some(json!({"name": "reader", "scopes": ["tasks:read"]})),
        )
        .await?;
    assert_eq!(status, 201, "{key}");
    let (key_id, reader) = (
        key["id"].as_str().context("id")?.to_owned(),
        key["key"].as_str().context("key")?.to_owned(),
    );
    let (status, hook) = cluster
        .call(
            Method::POST,
            "/api/webhooks",
            &owner_token,
            Some(json!({"url": "http://127.0.0.1:9/hook"})),
        )
        .await?;
    assert_eq!(status, 201, "{hook}");
    let hook = hook["id"].as_str().context("id")?.to_owned();
    let (status, ended) = cluster
        .call(
            Method::GET,
            &format!("/mcp/tasks/{task}/events?since_seq=0"),
            &owner_token,
            None,
        )
        .await?;
    assert_eq!(status, 200, "{ended}");

    // Tenant B, with a key that may do everything, names A's ids: 404 on every route.
    let other = cluster.create_key("beta").await?;
    let mut named: Vec<(Method, String)> = ["status", "events", "stream", "receipt", "verify"]
        .iter()
        .map(|route| (Method::GET, format!("/mcp/tasks/{task}/{route}")))
        .collect();
    named.push((
        Method::GET,
        format!("/api/log/proof/inclusion?task_id={task}"),
    ));
    named.push((Method::POST, format!("/mcp/tasks/{task}/resume")));
    for (method, path, _) in writes(&task, &key_id, &hook, &viewer_id) {
        if path.contains(&task)
            || path.contains(&key_id)
            || path.contains(&hook)
            || path.contains(&viewer_id)
        {
            named.push((method, path));
        }
    }
    assert!(named.len() >= 13, "{named:?}");
    for (method, path) in &named {
        let body = match path.as_str() {
            p if p.ends_with("/resume") => Some(json!({"last_seq": 0})),
            p if p.starts_with("/api/members/") && method == Method::PATCH => {
                Some(json!({"role": "admin"}))
            }
            _ => None,
        };
        let (status, answer) = cluster.call(method.clone(), path, &other, body).await?;
        assert_eq!(status, 404, "{method} {path}: {answer}");
    }
    // Lists and usage show nothing of A.
    for path in [
        "/mcp/tasks",
        "/api/keys",
        "/api/webhooks",
        "/api/members",
        "/api/usage",
    ] {
        let (status, answer) = cluster.call(Method::GET, path, &other, None).await?;
        assert_eq!(status, 200, "{path}: {answer}");
        let text = answer.to_string();
        for id in [&task, &key_id, &hook, &viewer_id, &tenant] {
            assert!(!text.contains(id.as_str()), "{path} shows {id}: {text}");
        }
    }

    // A read-only key and a viewer of A get 403 on every write, and nothing changes.
    let (status, login) = cluster
        .post(
            "/auth/login",
            None,
            &json!({"email": "viewer@example.com", "password": PASSWORD, "tenant_id": tenant}),
        )
        .await?;
    assert_eq!(status, 200, "{login}");
    let viewer_token = login["access_token"].as_str().context("token")?.to_owned();
    for credential in [&reader, &viewer_token] {
        for (method, path, body) in writes(&task, &key_id, &hook, &viewer_id) {
            let (status, answer) = cluster
                .call(method.clone(), &path, credential, body)
                .await?;
            assert_eq!(status, 403, "{method} {path}: {answer}");
        }
    }
    let (_, keys) = cluster
        .call(Method::GET, "/api/keys", &owner_token, None)
        .await?;
    assert_eq!(keys["keys"].as_array().map(Vec::len), Some(1), "{keys}");
    let (_, hooks) = cluster
        .call(Method::GET, "/api/webhooks", &owner_token, None)
        .await?;
    assert_eq!(
        hooks["webhooks"].as_array().map(Vec::len),
        Some(1),
        "{hooks}"
    );
    let (_, members) = cluster
        .call(Method::GET, "/api/members", &owner_token, None)
        .await?;
    assert_eq!(
        members["members"].as_array().map(Vec::len),
        Some(2),
        "{members}"
    );
    Ok(())
}
