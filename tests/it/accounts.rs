//! Sign-in (issue 8, part 1): register, login, refresh with rotation, logout, and
//! `Authorization: Bearer` on the task routes; forged, expired and misused tokens refused.

use e2e::{Cluster, JWT_SECRET, Options, collect_to_end, open_sse};
use reqwest::Method;
use serde_json::{Value, json};
use shared::tokens::{Subject, TokenType, Tokens};
use uuid::Uuid;

const PASSWORD: &str = "correct horse battery staple";

/// A request with an optional bearer token: status, body, `Retry-After`.
async fn call(
    cluster: &Cluster,
    method: Method,
    path: &str,
    bearer: Option<&str>,
    body: Option<Value>,
) -> anyhow::Result<(u16, Value, Option<String>)> {
    let mut request = cluster
        .http
        .request(method, format!("{}{path}", cluster.base_url));
    if let Some(token) = bearer {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await?;
    let status = response.status().as_u16();
    let retry = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    Ok((status, response.json().await.unwrap_or(Value::Null), retry))
}

async fn register(cluster: &Cluster, email: &str) -> anyhow::Result<Value> {
    let body = json!({"email": email, "password": PASSWORD, "name": "Ada"});
    let (status, answer, _) =
        call(cluster, Method::POST, "/auth/register", None, Some(body)).await?;
    anyhow::ensure!(status == 201, "register answered {status}: {answer}");
    Ok(answer)
}

fn token<'a>(answer: &'a Value, which: &str) -> &'a str {
    answer[which].as_str().unwrap_or_default()
}

#[tokio::test]
async fn a_registered_user_runs_tasks_with_bearer_tokens_until_logout() -> anyhow::Result<()> {
    let cluster = Cluster::start(Options::default()).await?;
    let signed = register(&cluster, "Ada@Example.com").await?;
    assert_eq!(signed["token_type"], "Bearer");
    assert_eq!(signed["expires_in"], 900);
    let access = token(&signed, "access_token");

    let mock = json!({"name": "hello", "adapter": "mock", "args": {"steps": 2, "interval_ms": 1}});
    let (status, started, _) = call(
        &cluster,
        Method::POST,
        "/mcp/start_task",
        Some(access),
        Some(mock),
    )
    .await?;
    assert_eq!(status, 200, "{started}");
    let task = started["task_id"].as_str().unwrap_or_default().to_owned();
    let stream = open_sse(
        cluster
            .http
            .get(format!("{}/mcp/tasks/{task}/stream", cluster.base_url))
            .bearer_auth(access),
    )
    .await?;
    let events = collect_to_end(stream).await?;
    assert_eq!(
        events.last().map(|e| e["kind"].clone()),
        Some(json!("succeeded"))
    );
    let (status, body, _) = call(
        &cluster,
        Method::GET,
        &format!("/mcp/tasks/{task}/status"),
        Some(access),
        None,
    )
    .await?;
    assert_eq!((status, body["state"].as_str()), (200, Some("succeeded")));
    // Another tenant's key sees nothing of it.
    let (status, _) = cluster
        .get(&format!("/mcp/tasks/{task}/status"), Some(&cluster.api_key))
        .await?;
    assert_eq!(status, 404);

    // A login opens a second session; the email is matched whatever its case.
    let login = json!({"email": "ada@example.COM", "password": PASSWORD});
    let (status, second, _) =
        call(&cluster, Method::POST, "/auth/login", None, Some(login)).await?;
    assert_eq!(status, 200, "{second}");
    assert_eq!(second["user_id"], signed["user_id"]);
    assert_eq!(second["tenant_id"], signed["tenant_id"]);

    // Logout ends the first session at once: its token, and the resume token it minted.
    let resume = started["resume_token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let (status, _, _) = call(&cluster, Method::POST, "/auth/logout", Some(access), None).await?;
    assert_eq!(status, 204);
    let (status, body, _) = call(
        &cluster,
        Method::GET,
        &format!("/mcp/tasks/{task}/status"),
        Some(access),
        None,
    )
    .await?;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("invalid_token")),
        "{body}"
    );
    let (status, body) = cluster
        .get(
            &format!("/mcp/tasks/{task}/stream?resume_token={resume}"),
            None,
        )
        .await?;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("invalid_resume_token")),
        "{body}"
    );
    // The other session goes on.
    let other = token(&second, "access_token");
    let (status, _, _) = call(
        &cluster,
        Method::GET,
        &format!("/mcp/tasks/{task}/status"),
        Some(other),
        None,
    )
    .await?;
    assert_eq!(status, 200);
    // An API key has no session to end.
    let response = cluster
        .http
        .post(format!("{}/auth/logout", cluster.base_url))
        .header("X-Api-Key", &cluster.api_key)
        .send()
        .await?;
    assert_eq!(response.status(), 400);
    Ok(())
}

#[tokio::test]
async fn refresh_tokens_rotate_and_a_reused_one_ends_its_session() -> anyhow::Result<()> {
    let cluster = Cluster::start(Options::default()).await?;
    let first = register(&cluster, "grace@example.com").await?;
    let refresh = |token: &str| json!({"refresh_token": token});

    // A refresh token is not an access token, nor the other way round.
    let (status, body, _) = call(
        &cluster,
        Method::GET,
        "/mcp/tasks",
        Some(token(&first, "refresh_token")),
        None,
    )
    .await?;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("not_an_access_token")),
        "{body}"
    );
    let wrong = refresh(token(&first, "access_token"));
    let (status, body, _) =
        call(&cluster, Method::POST, "/auth/refresh", None, Some(wrong)).await?;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("not_a_refresh_token")),
        "{body}"
    );

    let (status, second, _) = call(
        &cluster,
        Method::POST,
        "/auth/refresh",
        None,
        Some(refresh(token(&first, "refresh_token"))),
    )
    .await?;
    assert_eq!(status, 200, "{second}");
    assert_ne!(second["refresh_token"], first["refresh_token"]);
    let (status, _, _) = call(
        &cluster,
        Method::GET,
        "/mcp/tasks",
        Some(token(&second, "access_token")),
        None,
    )
    .await?;
    assert_eq!(status, 200);

    // The first refresh token again: the whole family ends.
    let (status, body, _) = call(
        &cluster,
        Method::POST,
        "/auth/refresh",
        None,
        Some(refresh(token(&first, "refresh_token"))),
    )
    .await?;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("refresh_token_reused")),
        "{body}"
    );
    let (status, body, _) = call(
        &cluster,
        Method::POST,
        "/auth/refresh",
        None,
        Some(refresh(token(&second, "refresh_token"))),
    )
    .await?;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("session_ended")),
        "{body}"
    );
    let (status, _, _) = call(
        &cluster,
        Method::GET,
        "/mcp/tasks",
        Some(token(&second, "access_token")),
        None,
    )
    .await?;
    assert_eq!(status, 401, "the revoked session's access token too");
    Ok(())
}

#[tokio::test]
async fn forged_expired_and_malformed_tokens_are_refused() -> anyhow::Result<()> {
    let cluster = Cluster::start(Options::default()).await?;
    let signed = register(&cluster, "alan@example.com").await?;
    let claims = |field: &str| signed[field].as_str().unwrap_or_default().parse::<Uuid>();
    let ours = Tokens::new(
        JWT_SECRET,
        std::time::Duration::from_secs(900),
        std::time::Duration::from_secs(3600),
    );
    let theirs = Tokens::new(
        "another-secret-another-secret-another",
        ours.access_ttl,
        ours.refresh_ttl,
    );
    let session: Uuid = sqlx::query_as::<_, (Uuid,)>("SELECT session_id FROM sessions")
        .fetch_one(&cluster.pg().await?)
        .await?
        .0;
    let subject = Subject {
        user: claims("user_id")?,
        tenant: claims("tenant_id")?,
        role: "owner".into(),
        session,
    };
    let now = shared::time::unix_now();
    let (expired, _) = ours.issue(&subject, TokenType::Access, Uuid::now_v7(), now - 3_600);
    let (foreign, _) = theirs.issue(&subject, TokenType::Access, Uuid::now_v7(), now);
    let unknown = Subject {
        session: Uuid::now_v7(),
        ..subject.clone()
    };
    let (sessionless, _) = ours.issue(&unknown, TokenType::Access, Uuid::now_v7(), now);
    let (valid, _) = ours.issue(&subject, TokenType::Access, Uuid::now_v7(), now);
    for (token, code) in [
        (expired.as_str(), "token_expired"),
        (foreign.as_str(), "invalid_token"),
        (sessionless.as_str(), "invalid_token"),
        ("not.a.token", "invalid_token"),
    ] {
        let (status, body, _) =
            call(&cluster, Method::GET, "/mcp/tasks", Some(token), None).await?;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (401, Some(code)),
            "{body}"
        );
    }
    let (status, _, _) = call(&cluster, Method::GET, "/mcp/tasks", Some(&valid), None).await?;
    assert_eq!(
        status, 200,
        "a token signed with the server's secret for a live session works"
    );
    let response = cluster
        .http
        .get(format!("{}/mcp/tasks", cluster.base_url))
        .header("Authorization", "Basic YTpi")
        .send()
        .await?;
    assert_eq!(response.status(), 401);
    let body: Value = response.json().await?;
    assert_eq!(body["error"]["code"], "invalid_authorization");
    Ok(())
}

#[tokio::test]
async fn bad_sign_in_input_is_refused_and_failed_logins_slow_down() -> anyhow::Result<()> {
    let cluster = Cluster::start(Options::default()).await?;
    register(&cluster, "edsger@example.com").await?;
    let pool = cluster.pg().await?;
    let users = || async {
        sqlx::query_as::<_, (i64,)>("SELECT count(*) FROM users")
            .fetch_one(&pool)
            .await
            .map(|r| r.0)
    };
    let before = users().await?;
    let cases = [
        (
            json!({"email": "new@example.com", "password": "short"}),
            400,
            "weak_password",
        ),
        (
            json!({"email": "new@example.com", "password": "Password123"}),
            400,
            "weak_password",
        ),
        (
            json!({"email": "new@example.com", "password": "x".repeat(10_000)}),
            400,
            "weak_password",
        ),
        (
            json!({"email": "not an email", "password": PASSWORD}),
            400,
            "invalid_email",
        ),
        (
            json!({"email": "'; DROP TABLE users; --@x.y", "password": PASSWORD}),
            400,
            "invalid_email",
        ),
        (
            json!({"email": "EDSGER@example.com", "password": PASSWORD}),
            409,
            "email_taken",
        ),
        (
            json!({"email": "new@example.com", "password": PASSWORD, "admin": true}),
            400,
            "invalid_body",
        ),
        (json!({"email": "new@example.com"}), 400, "invalid_body"),
        (
            json!({"email": "new@example.com", "password": PASSWORD, "name": "n".repeat(201)}),
            400,
            "invalid_name",
        ),
    ];
    for (body, status, code) in cases {
        let (got, answer, _) = call(
            &cluster,
            Method::POST,
            "/auth/register",
            None,
            Some(body.clone()),
        )
        .await?;
        assert_eq!(
            (got, answer["error"]["code"].as_str()),
            (status, Some(code)),
            "{body}: {answer}"
        );
        assert!(
            answer["error"]["message"]
                .as_str()
                .is_some_and(|m| m.len() > 15),
            "{answer}"
        );
        assert!(
            !answer.to_string().contains(PASSWORD),
            "no password in an error body"
        );
    }
    let malformed = cluster
        .http
        .post(format!("{}/auth/register", cluster.base_url))
        .header("content-type", "application/json")
        .body("{\"email\":")
        .send()
        .await?;
    assert_eq!(malformed.status(), 400);
    assert_eq!(users().await?, before, "nothing was stored");

    // A wrong password and an unknown email answer alike; then failures must wait.
    for email in ["edsger@example.com", "nobody@example.com"] {
        let login = json!({"email": email, "password": "wrong wrong wrong"});
        let (status, body, _) =
            call(&cluster, Method::POST, "/auth/login", None, Some(login)).await?;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (401, Some("invalid_credentials")),
            "{body}"
        );
    }
    let wrong = json!({"email": "edsger@example.com", "password": "wrong wrong wrong"});
    let mut refused = None;
    for _ in 0..10 {
        let (status, body, retry) = call(
            &cluster,
            Method::POST,
            "/auth/login",
            None,
            Some(wrong.clone()),
        )
        .await?;
        if status == 429 {
            assert_eq!(body["error"]["code"], "too_many_failed_logins");
            refused = retry;
            break;
        }
        assert_eq!(status, 401);
    }
    let retry: u64 = refused.expect("failed logins slow down").parse()?;
    assert!((1..=300).contains(&retry), "{retry}");
    // Even the right password waits now.
    let right = json!({"email": "edsger@example.com", "password": PASSWORD});
    let (status, _, _) = call(&cluster, Method::POST, "/auth/login", None, Some(right)).await?;
    assert_eq!(status, 429);
    Ok(())
}

#[tokio::test]
async fn owners_and_admins_manage_members_and_roles_take_effect_at_once() -> anyhow::Result<()> {
    let cluster = Cluster::start(Options::default()).await?;
    let owner = register(&cluster, "owner@example.com").await?;
    let other = register(&cluster, "bob@example.com").await?;
    let owner_token = token(&owner, "access_token").to_owned();
    let owners = Some(owner_token.as_str());
    let tenant = owner["tenant_id"].as_str().unwrap_or_default().to_owned();
    let bob = other["user_id"].as_str().unwrap_or_default().to_owned();

    let add = |email: &str, role: &str| json!({"email": email, "role": role});
    for (body, status, code) in [
        (add("nobody@example.com", "viewer"), 404, "user_not_found"),
        (add("bob@example.com", "emperor"), 400, "invalid_role"),
        (json!({"email": "bob@example.com"}), 400, "invalid_body"),
    ] {
        let (got, answer, _) =
            call(&cluster, Method::POST, "/api/members", owners, Some(body)).await?;
        assert_eq!(
            (got, answer["error"]["code"].as_str()),
            (status, Some(code)),
            "{answer}"
        );
    }
    let (status, added, _) = call(
        &cluster,
        Method::POST,
        "/api/members",
        owners,
        Some(add("BOB@example.com", "viewer")),
    )
    .await?;
    assert_eq!(
        (status, added["role"].as_str()),
        (201, Some("viewer")),
        "{added}"
    );
    let (status, body, _) = call(
        &cluster,
        Method::POST,
        "/api/members",
        owners,
        Some(add("bob@example.com", "admin")),
    )
    .await?;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("already_member"))
    );

    // Bob signs in to the owner's tenant as a viewer: he reads, but neither starts tasks
    // nor manages members.
    let login = json!({"email": "bob@example.com", "password": PASSWORD, "tenant_id": tenant});
    let (status, viewer, _) = call(
        &cluster,
        Method::POST,
        "/auth/login",
        None,
        Some(login.clone()),
    )
    .await?;
    assert_eq!(
        (status, viewer["tenant_id"].as_str()),
        (200, Some(tenant.as_str())),
        "{viewer}"
    );
    let viewer_token = token(&viewer, "access_token").to_owned();
    let (status, list, _) = call(
        &cluster,
        Method::GET,
        "/api/members",
        Some(&viewer_token),
        None,
    )
    .await?;
    assert_eq!(status, 200);
    assert_eq!(list["members"].as_array().map(Vec::len), Some(2));
    let mock = json!({"name": "x", "adapter": "mock", "args": {"steps": 1}});
    let (status, body, _) = call(
        &cluster,
        Method::POST,
        "/mcp/start_task",
        Some(&viewer_token),
        Some(mock.clone()),
    )
    .await?;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("insufficient_scope")),
        "{body}"
    );
    let (status, _, _) = call(
        &cluster,
        Method::POST,
        "/api/members",
        Some(&viewer_token),
        Some(add("owner@example.com", "viewer")),
    )
    .await?;
    assert_eq!(status, 403);

    // Made a member: his viewer session ends at once; signed in again, he starts tasks.
    let path = format!("/api/members/{bob}");
    let (status, _, _) = call(
        &cluster,
        Method::PATCH,
        &path,
        owners,
        Some(json!({"role": "member"})),
    )
    .await?;
    assert_eq!(status, 204);
    let (status, _, _) = call(
        &cluster,
        Method::GET,
        "/api/members",
        Some(&viewer_token),
        None,
    )
    .await?;
    assert_eq!(status, 401, "the old role's token is refused");
    let (_, member, _) = call(
        &cluster,
        Method::POST,
        "/auth/login",
        None,
        Some(login.clone()),
    )
    .await?;
    let (status, _, _) = call(
        &cluster,
        Method::POST,
        "/mcp/start_task",
        Some(token(&member, "access_token")),
        Some(mock),
    )
    .await?;
    assert_eq!(status, 200);

    // An admin manages members but not owners; the last owner cannot go.
    let (status, _, _) = call(
        &cluster,
        Method::PATCH,
        &path,
        owners,
        Some(json!({"role": "admin"})),
    )
    .await?;
    assert_eq!(status, 204);
    let (_, admin, _) = call(&cluster, Method::POST, "/auth/login", None, Some(login)).await?;
    let admins = Some(token(&admin, "access_token"));
    let owner_id = owner["user_id"].as_str().unwrap_or_default();
    let owner_path = format!("/api/members/{owner_id}");
    let (status, body, _) = call(&cluster, Method::DELETE, &owner_path, admins, None).await?;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("owners_only")),
        "{body}"
    );
    let (status, body, _) = call(&cluster, Method::DELETE, &owner_path, owners, None).await?;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("last_owner")),
        "{body}"
    );
    let (status, body, _) = call(
        &cluster,
        Method::PATCH,
        &owner_path,
        owners,
        Some(json!({"role": "viewer"})),
    )
    .await?;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("last_owner")),
        "{body}"
    );

    // Another tenant's member, and nonsense ids: 404 and 400; then Bob is removed.
    let (status, _, _) = call(
        &cluster,
        Method::DELETE,
        &format!("/api/members/{owner_id}"),
        Some(token(&other, "access_token")),
        None,
    )
    .await?;
    assert_eq!(status, 404, "bob's own tenant has no such member");
    let (status, body, _) =
        call(&cluster, Method::DELETE, "/api/members/nope", owners, None).await?;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_user_id"))
    );
    let (status, _, _) = call(&cluster, Method::DELETE, &path, owners, None).await?;
    assert_eq!(status, 204);
    let (status, _, _) = call(&cluster, Method::GET, "/api/members", admins, None).await?;
    assert_eq!(status, 401, "a removed member's session ends");
    let (status, list, _) = call(&cluster, Method::GET, "/api/members", owners, None).await?;
    assert_eq!(
        (status, list["members"].as_array().map(Vec::len)),
        (200, Some(1))
    );
    // The operator's key (scope *) reads the members of its own tenant only.
    let (status, list) = cluster.get("/api/members", Some(&cluster.api_key)).await?;
    assert_eq!(
        (status, list["members"].as_array().map(Vec::len)),
        (200, Some(0))
    );
    Ok(())
}

#[tokio::test]
async fn api_keys_are_made_listed_and_revoked_over_http() -> anyhow::Result<()> {
    let cluster = Cluster::start(Options::default()).await?;
    let owner = register(&cluster, "keys@example.com").await?;
    let owners = Some(token(&owner, "access_token"));
    let make = |body: Value| call(&cluster, Method::POST, "/api/keys", owners, Some(body));
    for (body, status, code) in [
        (
            json!({"name": "x", "scopes": ["tasks:fly"]}),
            400,
            "invalid_scopes",
        ),
        (json!({"name": "x", "scopes": []}), 400, "invalid_scopes"),
        (json!({"name": "", "scopes": ["*"]}), 400, "invalid_name"),
        (
            json!({"name": "x", "scopes": ["*"], "expires_at": "2001-01-01T00:00:00Z"}),
            400,
            "invalid_expiry",
        ),
        (
            json!({"name": "x", "scopes": ["*"], "expires_at": "soon"}),
            400,
            "invalid_body",
        ),
    ] {
        let (got, answer, _) = make(body.clone()).await?;
        assert_eq!(
            (got, answer["error"]["code"].as_str()),
            (status, Some(code)),
            "{body}: {answer}"
        );
    }
    let (status, reader, _) = make(json!({"name": "reader", "scopes": ["tasks:read"]})).await?;
    assert_eq!(status, 201, "{reader}");
    let reader_key = reader["key"].as_str().unwrap_or_default().to_owned();
    assert!(reader_key.starts_with("axon_"));
    let (status, keeper, _) =
        make(json!({"name": "keeper", "scopes": ["keys:*"], "expires_at": "2999-01-01T00:00:00Z"}))
            .await?;
    assert_eq!(status, 201, "{keeper}");
    let keeper_key = keeper["key"].as_str().unwrap_or_default().to_owned();

    // The reader key reads tasks but cannot start them or touch keys; the keeper cannot
    // make a key with more than it has.
    let (status, _) = cluster.get("/mcp/tasks", Some(&reader_key)).await?;
    assert_eq!(status, 200);
    let (status, body) = cluster
        .post(
            "/mcp/start_task",
            Some(&reader_key),
            &json!({"name": "x", "adapter": "mock", "args": {}}),
        )
        .await?;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("insufficient_scope"))
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("tasks:write"),
        "{body}"
    );
    let (status, body) = cluster.get("/api/keys", Some(&reader_key)).await?;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("keys:*"),
        "{body}"
    );
    let (status, body) = cluster
        .post(
            "/api/keys",
            Some(&keeper_key),
            &json!({"name": "y", "scopes": ["*"]}),
        )
        .await?;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("scope_escalation")),
        "{body}"
    );

    // The list never shows a key; last use is written within seconds.
    let (status, list) = cluster.get("/api/keys", Some(&keeper_key)).await?;
    assert_eq!(status, 200);
    assert!(!list.to_string().contains(&reader_key) && !list.to_string().contains("key_hash"));
    let names: Vec<&str> = list["keys"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|k| k["name"].as_str())
        .collect();
    assert_eq!(names, ["keeper", "reader"]);
    let reader_id = reader["id"].as_str().unwrap_or_default().to_owned();
    let deadline = tokio::time::Instant::now() + e2e::PATIENCE;
    loop {
        let (_, list) = cluster.get("/api/keys", Some(&keeper_key)).await?;
        let used = list["keys"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|k| k["id"] == reader_id.as_str());
        if used.is_some_and(|k| k["last_used_at"].is_string()) {
            break;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "last_used_at was never written"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }

    // Revoked: refused at once; another tenant's key is a 404 here.
    let (status, _, _) = call(
        &cluster,
        Method::DELETE,
        &format!("/api/keys/{reader_id}"),
        owners,
        None,
    )
    .await?;
    assert_eq!(status, 204);
    let (status, body) = cluster.get("/mcp/tasks", Some(&reader_key)).await?;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("invalid_api_key"))
    );
    let (_, theirs) = cluster.get("/api/keys", Some(&cluster.api_key)).await?;
    let their_id = theirs["keys"][0]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    for path in [format!("/api/keys/{their_id}"), "/api/keys/nope".to_owned()] {
        let (status, body, _) = call(&cluster, Method::DELETE, &path, owners, None).await?;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (404, Some("key_not_found")),
            "{path}"
        );
    }
    let (status, _) = cluster.get("/mcp/tasks", Some(&cluster.api_key)).await?;
    assert_eq!(status, 200, "the other tenant's key still works");
    Ok(())
}
