//! What a run's container is made of: its image reference for a pull, its name, labels and
//! limits (memory without swap, CPUs, processes, a read-only root with private tmpfs
//! directories, no new privileges, every capability dropped, no network by default).

use std::collections::HashMap;

use bollard::models::{ContainerCreateBody, HostConfig, HostConfigLogConfig};
use shared::adapters::DockerArgs;
use shared::config::DockerConfig;
use shared::ids::{TaskId, TenantId};

use super::engine::{ATTEMPT_LABEL, TASK_LABEL, TENANT_LABEL};

/// The container of attempt `attempt` of a task: one name per attempt, so the engine
/// refuses a second container for it.
pub fn name(task_id: TaskId, attempt: u32) -> String {
    format!("axontask-{task_id}-{attempt}")
}

/// The create request of the container running `args`.
pub fn body(
    args: &DockerArgs,
    config: &DockerConfig,
    (task_id, tenant_id, attempt): (TaskId, TenantId, u32),
) -> ContainerCreateBody {
    let labels = HashMap::from([
        (TASK_LABEL.to_owned(), task_id.to_string()),
        (TENANT_LABEL.to_owned(), tenant_id.to_string()),
        (ATTEMPT_LABEL.to_owned(), attempt.to_string()),
    ]);
    let memory = i64::try_from(config.memory_mb.saturating_mul(1 << 20)).unwrap_or(i64::MAX);
    let private = format!("rw,exec,nosuid,nodev,size={}m", config.tmpfs_mb);
    let tmpfs = HashMap::from([
        (args.workdir().to_owned(), private.clone()),
        ("/tmp".to_owned(), private),
    ]);
    ContainerCreateBody {
        image: Some(args.image.clone()),
        cmd: args.argv(),
        env: Some(args.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
        working_dir: Some(args.workdir().to_owned()),
        labels: Some(labels),
        tty: Some(false),
        open_stdin: Some(false),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        host_config: Some(HostConfig {
            memory: Some(memory),
            // Equal to the memory: no swap on top of it.
            memory_swap: Some(memory),
            nano_cpus: Some((config.cpus * 1e9) as i64),
            pids_limit: Some(i64::from(config.pids)),
            readonly_rootfs: Some(true),
            tmpfs: Some(tmpfs),
            security_opt: Some(vec!["no-new-privileges".into()]),
            cap_drop: Some(vec!["ALL".into()]),
            network_mode: Some(config.network.clone()),
            // An init as process 1 passes SIGTERM on to the command (a process 1 without a
            // handler of its own ignores it) and reaps what the command leaves behind.
            init: Some(true),
            auto_remove: Some(false),
            // Its output reaches the worker through the attach; a log on the engine's disk
            // would only grow.
            log_config: Some(HostConfigLogConfig {
                typ: Some("none".into()),
                config: None,
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// `image` split into what a pull asks for: the repository and its tag (`latest` when the
/// reference names none; a pull without a tag would fetch every tag). A digest reference
/// is pulled as it is.
pub fn pull_reference(image: &str) -> (String, Option<String>) {
    if image.contains('@') {
        return (image.to_owned(), None);
    }
    let name_start = image.rfind('/').map_or(0, |slash| slash + 1);
    match image[name_start..].rfind(':') {
        Some(colon) => {
            let at = name_start + colon;
            (image[..at].to_owned(), Some(image[at + 1..].to_owned()))
        }
        None => (image.to_owned(), Some("latest".to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pulls_name_a_tag() {
        assert_eq!(
            pull_reference("busybox"),
            ("busybox".into(), Some("latest".into()))
        );
        assert_eq!(
            pull_reference("localhost:5000/app:1.2"),
            ("localhost:5000/app".into(), Some("1.2".into()))
        );
        assert_eq!(
            pull_reference("localhost:5000/app"),
            ("localhost:5000/app".into(), Some("latest".into()))
        );
        assert_eq!(
            pull_reference("app@sha256:abc"),
            ("app@sha256:abc".into(), None)
        );
    }

    #[test]
    fn containers_are_confined() {
        let args: DockerArgs =
            serde_json::from_value(serde_json::json!({"image": "busybox", "workdir": "/src"}))
                .expect("args");
        let config = DockerConfig {
            host: None,
            memory_mb: 64,
            cpus: 0.5,
            pids: 32,
            tmpfs_mb: 16,
            network: "none".into(),
        };
        let task = TaskId(uuid::Uuid::now_v7());
        let tenant = TenantId(uuid::Uuid::now_v7());
        let body = body(&args, &config, (task, tenant, 2));
        let host = body.host_config.expect("host config");
        assert_eq!(host.memory, Some(64 << 20));
        assert_eq!(host.memory_swap, Some(64 << 20));
        assert_eq!(host.nano_cpus, Some(500_000_000));
        assert_eq!(host.readonly_rootfs, Some(true));
        assert_eq!(host.cap_drop, Some(vec!["ALL".to_owned()]));
        assert_eq!(host.network_mode.as_deref(), Some("none"));
        assert!(host.tmpfs.expect("tmpfs").contains_key("/src"));
        let labels = body.labels.expect("labels");
        assert_eq!(labels.get(ATTEMPT_LABEL).map(String::as_str), Some("2"));
        assert_eq!(labels.get(TASK_LABEL), Some(&task.to_string()));
        assert_eq!(name(task, 2), format!("axontask-{task}-2"));
    }
}
