//! The Docker engine a worker runs containers on: one client, its API version agreed with
//! the engine on first use (Debian's engine speaks 1.41, older than the client's default),
//! and the containers of runs, found by their labels.

use std::collections::HashMap;

use bollard::Docker;
use bollard::models::ContainerSummary;
use bollard::query_parameters::{ListContainersOptions, RemoveContainerOptions};
use shared::config::DockerConfig;
use shared::ids::{TaskId, TenantId};
use tokio::sync::OnceCell;

/// Label naming the task a container runs.
pub const TASK_LABEL: &str = "axontask.task_id";
/// Label naming the task's tenant.
pub const TENANT_LABEL: &str = "axontask.tenant_id";
/// Label naming the attempt a container belongs to.
pub const ATTEMPT_LABEL: &str = "axontask.attempt";

/// The engine when `DOCKER_HOST` names none.
const LOCAL_ENGINE: &str = "unix:///var/run/docker.sock";

/// The engine of `DOCKER_HOST` and the limits of its containers.
pub struct Engine {
    config: DockerConfig,
    client: OnceCell<Docker>,
}

/// A container of a run, as its labels say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Labeled {
    /// The container's id.
    pub id: String,
    /// The task it runs.
    pub task_id: TaskId,
    /// The task's tenant.
    pub tenant_id: TenantId,
    /// Its attempt.
    pub attempt: u32,
}

impl Engine {
    /// An engine not contacted yet.
    pub fn new(config: DockerConfig) -> Self {
        Self {
            config,
            client: OnceCell::new(),
        }
    }

    /// The containers' limits and network.
    pub fn config(&self) -> &DockerConfig {
        &self.config
    }

    /// Where the engine is, for messages.
    pub fn host(&self) -> &str {
        self.config.host.as_deref().unwrap_or(LOCAL_ENGINE)
    }

    /// The client, once the engine answered; an error says the engine cannot be reached.
    pub async fn client(&self) -> Result<&Docker, String> {
        let unreachable = |e: bollard::errors::Error| {
            format!(
                "docker engine unreachable at {} ({e}); is dockerd running, and DOCKER_HOST right?",
                self.host()
            )
        };
        self.client
            .get_or_try_init(|| async {
                let client = Docker::connect_with_host(self.host()).map_err(unreachable)?;
                client.negotiate_version().await.map_err(unreachable)
            })
            .await
    }

    /// Every container of a run (running or not); of one task when `task` is given.
    pub async fn runs(&self, task: Option<TaskId>) -> Result<Vec<Labeled>, String> {
        let client = self.client().await?;
        let label = match task {
            Some(task) => format!("{TASK_LABEL}={task}"),
            None => TASK_LABEL.to_owned(),
        };
        let options = ListContainersOptions {
            all: true,
            filters: Some(HashMap::from([("label".to_owned(), vec![label])])),
            ..Default::default()
        };
        let containers = client
            .list_containers(Some(options))
            .await
            .map_err(|e| format!("cannot list containers: {e}"))?;
        Ok(containers.iter().filter_map(labeled).collect())
    }

    /// Removes a container, running or not; one already gone is fine.
    pub async fn remove(&self, id: &str) -> Result<(), String> {
        let client = self.client().await?;
        let options = RemoveContainerOptions {
            force: true,
            ..Default::default()
        };
        match client.remove_container(id, Some(options)).await {
            Ok(()) => Ok(()),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(()),
            // Removal already under way (a `docker rm` racing this one).
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 409, ..
            }) => Ok(()),
            Err(e) => Err(format!("cannot remove container {id}: {e}")),
        }
    }
}

fn labeled(container: &ContainerSummary) -> Option<Labeled> {
    let labels = container.labels.as_ref()?;
    Some(Labeled {
        id: container.id.clone()?,
        task_id: TaskId(labels.get(TASK_LABEL)?.parse().ok()?),
        tenant_id: TenantId(labels.get(TENANT_LABEL)?.parse().ok()?),
        attempt: labels.get(ATTEMPT_LABEL)?.parse().ok()?,
    })
}
