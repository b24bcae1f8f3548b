//! A local server that answers as the Fly.io Machines API documents (the shapes recorded
//! under `tests/fly/`), for the `fly` adapter's tests: Fly.io cannot be reached from these
//! machines. What a Machine does is chosen by its image: `exit-N` exits with N shortly after
//! it started, `oom` is killed for memory, `sleep` runs until it is stopped (exit 143), and
//! `invalid-image` is refused with a 422. Every request is recorded.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

/// The token the server accepts.
pub const TOKEN: &str = "test-fly-token";

/// How long a Machine is `created` before it is `started`, and `started` before an
/// `exit-N` or `oom` image exits.
const STEP: Duration = Duration::from_millis(150);

/// One Machine and what its image makes it do.
struct Mock {
    machine: Value,
    made: Instant,
    /// When it was asked to stop.
    stopped: Option<Instant>,
    destroyed: bool,
}

impl Mock {
    /// A Machine made now from the recorded shape, with a fresh id.
    fn new(name: Option<&str>, config: &Value, region: Option<&str>) -> Self {
        let mut machine = recorded(include_str!("fly/machine.json"));
        let id = uuid::Uuid::now_v7().as_u128() & 0xff_ffff_ffff_ffff;
        machine["id"] = json!(format!("{id:014x}"));
        machine["config"] = config.clone();
        if let Some(name) = name {
            machine["name"] = json!(name);
        }
        if let Some(region) = region {
            machine["region"] = json!(region);
        }
        Self {
            machine,
            made: Instant::now(),
            stopped: None,
            destroyed: false,
        }
    }

    /// The Machine now: its state and events follow from the time since it was made.
    fn now(&self) -> Value {
        let image = self.machine["config"]["image"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let age = self.made.elapsed();
        let exit = if let Some(at) = self.stopped {
            Some((143, false, at))
        } else if let Some(code) = image.strip_prefix("exit-") {
            (age >= STEP * 2).then(|| (code.parse().unwrap_or(1), false, self.made + STEP * 2))
        } else if image == "oom" {
            (age >= STEP * 2).then_some((137, true, self.made + STEP * 2))
        } else {
            None
        };
        let state = if self.destroyed {
            "destroyed"
        } else if exit.is_some() {
            "stopped"
        } else if age >= STEP {
            "started"
        } else {
            "created"
        };
        let mut machine = self.machine.clone();
        machine["state"] = json!(state);
        let mut events = vec![];
        if let Some((code, oom, _)) = exit {
            let mut event = recorded(include_str!("fly/exit_event.json"));
            event["request"]["exit_event"]["exit_code"] = json!(code);
            event["request"]["exit_event"]["oom_killed"] = json!(oom);
            event["request"]["exit_event"]["requested_stop"] = json!(self.stopped.is_some());
            events.push(event);
        }
        if age >= STEP {
            events.push(recorded(include_str!("fly/start_event.json")));
        }
        events.extend(
            self.machine["events"]
                .as_array()
                .cloned()
                .unwrap_or_default(),
        );
        machine["events"] = json!(events);
        machine
    }
}

fn recorded(text: &str) -> Value {
    serde_json::from_str(text).expect("a recorded shape is JSON")
}

/// The server's Machines and the requests it answered.
#[derive(Default)]
struct Machines {
    by_id: HashMap<String, Mock>,
    requests: Vec<String>,
}

type Shared = Arc<Mutex<Machines>>;

fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, Machines> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A running local Machines API.
pub struct FlyApi {
    /// Its base URL (`FLY_API_HOSTNAME`).
    pub url: String,
    shared: Shared,
    server: tokio::task::JoinHandle<()>,
}

impl FlyApi {
    /// Starts a server on a free loopback port.
    pub async fn start() -> anyhow::Result<Self> {
        let shared = Shared::default();
        let app = axum::Router::new()
            .route("/v1/apps/{app}/machines", post(create).get(list))
            .route("/v1/apps/{app}/machines/{id}", get(read).delete(destroy))
            .route("/v1/apps/{app}/machines/{id}/wait", get(wait))
            .route("/v1/apps/{app}/machines/{id}/stop", post(stop))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            url,
            shared,
            server,
        })
    }

    /// The requests answered so far, as `METHOD /path`.
    pub fn requests(&self) -> Vec<String> {
        lock(&self.shared).requests.clone()
    }

    /// Makes a Machine with `config` as a worker that died would have left it; its id.
    pub fn leave(&self, config: Value) -> String {
        let mock = Mock::new(None, &config, None);
        let id = mock.machine["id"].as_str().unwrap_or_default().to_owned();
        lock(&self.shared).by_id.insert(id.clone(), mock);
        id
    }

    /// Whether the Machine `id` was destroyed.
    pub fn destroyed(&self, id: &str) -> bool {
        lock(&self.shared)
            .by_id
            .get(id)
            .is_some_and(|m| m.destroyed)
    }

    /// The config each Machine was made with, by id.
    pub fn configs(&self) -> HashMap<String, Value> {
        lock(&self.shared)
            .by_id
            .iter()
            .map(|(id, mock)| (id.clone(), mock.machine["config"].clone()))
            .collect()
    }
}

impl Drop for FlyApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn error(status: StatusCode, body: Value) -> Response {
    (status, Json(body)).into_response()
}

/// Records the request; the 401 answer when it lacks the bearer token.
fn refused(shared: &Shared, headers: &HeaderMap, request: String) -> Option<Response> {
    lock(shared).requests.push(request);
    let expected = format!("Bearer {TOKEN}");
    let given = headers.get("authorization").and_then(|v| v.to_str().ok());
    (given != Some(expected.as_str())).then(|| {
        error(
            StatusCode::UNAUTHORIZED,
            recorded(include_str!("fly/error_401.json")),
        )
    })
}

async fn create(
    State(shared): State<Shared>,
    Path(app): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if let Some(refused) = refused(&shared, &headers, format!("POST /v1/apps/{app}/machines")) {
        return refused;
    }
    if body["config"]["image"] == "invalid-image" {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            recorded(include_str!("fly/error_422.json")),
        );
    }
    let mock = Mock::new(
        body["name"].as_str(),
        &body["config"],
        body["region"].as_str(),
    );
    let now = mock.now();
    let id = now["id"].as_str().unwrap_or_default().to_owned();
    lock(&shared).by_id.insert(id, mock);
    Json(now).into_response()
}

async fn list(
    State(shared): State<Shared>,
    Path(app): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = refused(&shared, &headers, format!("GET /v1/apps/{app}/machines")) {
        return refused;
    }
    let machines = lock(&shared);
    let all: Vec<Value> = machines
        .by_id
        .values()
        .filter(|m| !m.destroyed)
        .map(Mock::now)
        .collect();
    Json(all).into_response()
}

async fn read(
    State(shared): State<Shared>,
    Path((app, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let request = format!("GET /v1/apps/{app}/machines/{id}");
    if let Some(refused) = refused(&shared, &headers, request) {
        return refused;
    }
    match lock(&shared).by_id.get(&id) {
        Some(mock) => Json(mock.now()).into_response(),
        None => error(StatusCode::NOT_FOUND, json!({"error": "machine not found"})),
    }
}

async fn wait(
    State(shared): State<Shared>,
    Path((app, id)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let wanted = query.get("state").cloned().unwrap_or_default();
    let request = format!("GET /v1/apps/{app}/machines/{id}/wait?state={wanted}");
    if let Some(refused) = refused(&shared, &headers, request) {
        return refused;
    }
    let timeout: u64 = query
        .get("timeout")
        .and_then(|t| t.parse().ok())
        .unwrap_or(60);
    let deadline = Instant::now() + Duration::from_secs(timeout);
    while Instant::now() < deadline {
        let state = match lock(&shared).by_id.get(&id) {
            Some(mock) => mock.now()["state"].clone(),
            None => return error(StatusCode::NOT_FOUND, json!({"error": "machine not found"})),
        };
        if state == wanted.as_str() {
            return Json(json!({"ok": true})).into_response();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    error(
        StatusCode::REQUEST_TIMEOUT,
        json!({"error": "deadline_exceeded: machine did not reach the state in time"}),
    )
}

async fn stop(
    State(shared): State<Shared>,
    Path((app, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let request = format!("POST /v1/apps/{app}/machines/{id}/stop");
    change(&shared, &headers, request, &id, |mock| {
        mock.stopped.get_or_insert_with(Instant::now);
    })
}

async fn destroy(
    State(shared): State<Shared>,
    Path((app, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let request = format!("DELETE /v1/apps/{app}/machines/{id}");
    change(&shared, &headers, request, &id, |mock| {
        mock.destroyed = true
    })
}

/// Applies `change` to Machine `id` and answers `{"ok":true}` (401 or 404 as the API).
fn change(
    shared: &Shared,
    headers: &HeaderMap,
    request: String,
    id: &str,
    change: impl FnOnce(&mut Mock),
) -> Response {
    if let Some(refused) = refused(shared, headers, request) {
        return refused;
    }
    match lock(shared).by_id.get_mut(id) {
        Some(mock) => {
            change(mock);
            Json(json!({"ok": true})).into_response()
        }
        None => error(StatusCode::NOT_FOUND, json!({"error": "machine not found"})),
    }
}
