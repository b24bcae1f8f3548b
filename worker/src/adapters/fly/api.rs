//! The Fly.io Machines API, as much of it as the adapter uses: make, wait for, read, stop,
//! destroy and list Machines (`FLY_API_HOSTNAME`, `Authorization: Bearer FLY_API_TOKEN`).
//! An error says what the API answered and what to do about it; it never holds the token.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};
use shared::config::FlyConfig;

/// How long one wait request asks the API to hold (its most is 60 s).
pub const WAIT: Duration = Duration::from_secs(60);

/// A Machine as the API describes it (the fields the adapter reads).
#[derive(Debug, Clone, Deserialize)]
pub struct Machine {
    /// Its id.
    pub id: String,
    /// Its name.
    #[serde(default)]
    pub name: String,
    /// `created`, `starting`, `started`, `stopping`, `stopped`, `destroying`, `destroyed`…
    #[serde(default)]
    pub state: String,
    /// Its version; waits name it.
    #[serde(default)]
    pub instance_id: String,
    /// Its events, newest first.
    #[serde(default)]
    pub events: Vec<Event>,
    /// Its config (the adapter reads the metadata it set).
    #[serde(default)]
    pub config: Value,
}

/// One of a Machine's events.
#[derive(Debug, Clone, Deserialize)]
pub struct Event {
    /// `launch`, `start`, `exit`, `destroy`…
    #[serde(rename = "type", default)]
    pub kind: String,
    /// The state it left the Machine in (`created`, `started`, `stopped`…).
    #[serde(default)]
    pub status: String,
    /// When, in milliseconds since 1970.
    #[serde(default)]
    pub timestamp: i64,
    /// What the event carries: an exit's code.
    #[serde(default)]
    pub request: Option<EventRequest>,
}

/// The payload of an event.
#[derive(Debug, Clone, Deserialize)]
pub struct EventRequest {
    /// Set on `exit` events.
    #[serde(default)]
    pub exit_event: Option<ExitEvent>,
}

/// How the Machine's process ended.
#[derive(Debug, Clone, Deserialize)]
pub struct ExitEvent {
    /// Its exit code.
    #[serde(default)]
    pub exit_code: i32,
    /// Whether the memory limit killed it.
    #[serde(default)]
    pub oom_killed: bool,
}

impl Machine {
    /// The newest exit of the Machine's process, if it exited.
    pub fn exit(&self) -> Option<&ExitEvent> {
        self.events
            .iter()
            .filter(|e| e.kind == "exit")
            .find_map(|e| e.request.as_ref()?.exit_event.as_ref())
    }
}

/// The Machines API of one token.
pub struct Api {
    client: reqwest::Client,
    base: String,
    token: String,
    apps: Vec<String>,
}

impl Api {
    /// A client of `config`'s API; an error when no token is set.
    pub fn new(config: &FlyConfig) -> Result<Self, String> {
        let token = config
            .api_token
            .clone()
            .ok_or("FLY_API_TOKEN is not set; the operator sets it to run fly tasks")?;
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(WAIT + Duration::from_secs(15))
            .user_agent("AxonTask-Worker/1")
            .build()
            .map_err(|e| format!("cannot build the Machines API client: {e}"))?;
        Ok(Self {
            client,
            base: config.api_hostname.trim_end_matches('/').to_owned(),
            token,
            apps: config.apps.clone(),
        })
    }

    /// Whether tasks may make Machines in `app` (`FLY_APPS`).
    pub fn allows(&self, app: &str) -> bool {
        self.apps.iter().any(|a| a == app)
    }

    /// The apps tasks may make Machines in.
    pub fn apps(&self) -> impl Iterator<Item = &str> {
        self.apps.iter().map(String::as_str)
    }

    /// Makes (and starts) a Machine named `name` in `app`.
    pub async fn create(
        &self,
        app: &str,
        name: &str,
        region: Option<&str>,
        config: Value,
    ) -> Result<Machine, String> {
        let mut body = json!({"name": name, "config": config});
        if let Some(region) = region {
            body["region"] = json!(region);
        }
        let request = self
            .client
            .post(format!("{}/v1/apps/{app}/machines", self.base))
            .json(&body);
        self.send(request, "making the Machine").await
    }

    /// Waits up to [`WAIT`] for the Machine to be in `state`; `false` if it was not.
    pub async fn wait(&self, app: &str, machine: &Machine, state: &str) -> Result<bool, String> {
        let mut url = format!(
            "{}/v1/apps/{app}/machines/{}/wait?state={state}&timeout={}",
            self.base,
            machine.id,
            WAIT.as_secs()
        );
        if !machine.instance_id.is_empty() {
            url.push_str(&format!("&instance_id={}", machine.instance_id));
        }
        let response = self.answer(self.client.get(url)).await?;
        match response.status().as_u16() {
            200..=299 => Ok(true),
            408 => Ok(false),
            _ => Err(refusal(response, "waiting for the Machine").await),
        }
    }

    /// The Machine as it is now.
    pub async fn get(&self, app: &str, id: &str) -> Result<Machine, String> {
        let request = self
            .client
            .get(format!("{}/v1/apps/{app}/machines/{id}", self.base));
        self.send(request, "reading the Machine").await
    }

    /// Asks the Machine to stop: SIGTERM, then SIGKILL after `grace`.
    pub async fn stop(&self, app: &str, id: &str, grace: Duration) -> Result<(), String> {
        let body = json!({"signal": "SIGTERM", "timeout": format!("{}s", grace.as_secs().max(1))});
        let request = self
            .client
            .post(format!("{}/v1/apps/{app}/machines/{id}/stop", self.base))
            .json(&body);
        self.send::<Value>(request, "stopping the Machine")
            .await
            .map(drop)
    }

    /// Destroys the Machine, running or not; one already gone is fine.
    pub async fn destroy(&self, app: &str, id: &str) -> Result<(), String> {
        let url = format!("{}/v1/apps/{app}/machines/{id}?force=true", self.base);
        let response = self.answer(self.client.delete(url)).await?;
        match response.status().as_u16() {
            200..=299 | 404 => Ok(()),
            _ => Err(refusal(response, "destroying the Machine").await),
        }
    }

    /// The app's Machines.
    pub async fn list(&self, app: &str) -> Result<Vec<Machine>, String> {
        let request = self
            .client
            .get(format!("{}/v1/apps/{app}/machines", self.base));
        self.send(request, "listing the app's Machines").await
    }

    /// Sends `request` with the token; its answer, whatever the status.
    async fn answer(&self, request: reqwest::RequestBuilder) -> Result<reqwest::Response, String> {
        request
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| self.unreachable(e))
    }

    async fn send<T: serde::de::DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
        doing: &str,
    ) -> Result<T, String> {
        let response = self.answer(request).await?;
        if !response.status().is_success() {
            return Err(refusal(response, doing).await);
        }
        response.json().await.map_err(|e| {
            format!("the Machines API answered {doing} with something unexpected: {e}")
        })
    }

    fn unreachable(&self, e: reqwest::Error) -> String {
        format!(
            "the Machines API at {} is unreachable ({}); check FLY_API_HOSTNAME and the network",
            self.base,
            e.without_url()
        )
    }
}

/// What a refused request says: the status, the API's own error, and what to do.
async fn refusal(response: reqwest::Response, doing: &str) -> String {
    let status = response.status().as_u16();
    let said = response
        .json::<Value>()
        .await
        .ok()
        .and_then(|body| body["error"].as_str().map(str::to_owned))
        .unwrap_or_default();
    let hint = match status {
        401 | 403 => "; check FLY_API_TOKEN (a token with access to the app)",
        404 => "; check that the app exists",
        422 => "; check the task's image, region and config",
        429 => "; the API is rate limiting, try again later",
        _ => "",
    };
    let said = if said.is_empty() {
        String::new()
    } else {
        format!(": {said}")
    };
    format!("fly refused {doing} ({status}{said}){hint}")
}
