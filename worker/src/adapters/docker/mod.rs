//! `docker`: runs the task in a container of its own on the Docker engine (`DOCKER_HOST`):
//! its image pulled when missing (unless `pull` is `never`), limits and confinement from
//! [`spec`], one `stdout`/`stderr` event per line as `shell` reports them, and the exit
//! code as the end. Stop (cancel, timeout) stops the container (SIGTERM, SIGKILL after the
//! grace period); whatever happens, the container is removed at the end.
//!
//! One run at a time holds a task, so when attempt N runs, containers of earlier attempts
//! (a worker died under them) are stale: the run removes them first, and a worker starting
//! removes those of attempts that are over ([`sweep`]). A container's name holds its
//! attempt, so the engine never makes two for one attempt.

pub mod engine;
mod spec;
pub mod sweep;

use std::time::Duration;

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::errors::Error as DockerError;
use bollard::query_parameters::{
    AttachContainerOptions, CreateContainerOptions, CreateImageOptions, StopContainerOptions,
};
use futures::{Stream, StreamExt};
use shared::adapters::{DockerArgs, Pull};
use shared::events::TaskEvent;
use tokio_util::sync::CancellationToken;

use super::lines::Lines;
use super::{Outcome, failed};
use crate::emitter::{Emitter, ShuttingDown};
use engine::Engine;

/// After a stop, the container's remaining output is read for at most this long.
const DRAIN: Duration = Duration::from_secs(2);

/// Runs the task's container on `engine`.
pub async fn run(
    args: DockerArgs,
    out: &Emitter,
    stop: CancellationToken,
    kill_grace: Duration,
    engine: &Engine,
) -> Result<Outcome, ShuttingDown> {
    let (task_id, tenant_id, attempt) = out.attempt();
    let client = match engine.client().await {
        Ok(client) => client,
        Err(reason) => return Ok(failed(reason)),
    };
    sweep::earlier_attempts(engine, task_id, attempt).await;
    // A pull can take minutes: a cancel or timeout meanwhile ends it.
    tokio::select! {
        ensured = ensure_image(client, &args) => {
            if let Err(reason) = ensured {
                return Ok(failed(reason));
            }
        }
        () = stop.cancelled() => return Ok(Outcome::Stopped),
    }
    let name = spec::name(task_id, attempt);
    let body = spec::body(&args, engine.config(), (task_id, tenant_id, attempt));
    let options = CreateContainerOptions {
        name: Some(name.clone()),
        ..Default::default()
    };
    if let Err(e) = client.create_container(Some(options), body).await {
        return Ok(failed(format!(
            "cannot create the container: {}",
            server_message(&e)
        )));
    }
    // Attached before it starts, so no line is missed: a followed log can end short of
    // the output of a container that exits (seen with 100,000 lines in the benchmark).
    let options = AttachContainerOptions {
        stream: true,
        stdout: true,
        stderr: true,
        ..Default::default()
    };
    let started = match client.attach_container(&name, Some(options)).await {
        Ok(attached) => client
            .start_container(&name, None)
            .await
            .map(|()| attached.output),
        Err(e) => Err(e),
    };
    let outcome = match started {
        Ok(output) => follow(client, engine, &name, output, out, &stop, kill_grace).await,
        Err(e) => Ok(failed(format!(
            "cannot start the container: {}",
            server_message(&e)
        ))),
    };
    if let Err(e) = engine.remove(&name).await {
        tracing::warn!(%task_id, attempt, error = %e, "a finished container stays; the next worker start removes it");
    }
    outcome
}

/// Reports the container's `output` until it ends, then its exit; on stop, stops it.
async fn follow(
    client: &Docker,
    engine: &Engine,
    name: &str,
    output: impl Stream<Item = Result<LogOutput, DockerError>>,
    out: &Emitter,
    stop: &CancellationToken,
    kill_grace: Duration,
) -> Result<Outcome, ShuttingDown> {
    let mut pumping = std::pin::pin!(pump(output, out));
    let pumped = tokio::select! {
        pumped = &mut pumping => pumped?,
        () = stop.cancelled() => {
            let grace = i32::try_from(kill_grace.as_secs_f64().ceil() as u64).unwrap_or(i32::MAX);
            let options = StopContainerOptions { t: Some(grace), signal: None };
            if let Err(e) = client.stop_container(name, Some(options)).await {
                tracing::warn!(container = name, error = %e, "cannot stop the container; removing it");
            }
            // What it wrote before it stopped is still reported, if it comes soon; the
            // stream's own end no longer matters.
            if let Ok(drained) = tokio::time::timeout(DRAIN, &mut pumping).await {
                let _ended = drained?;
            }
            return Ok(Outcome::Stopped);
        }
    };
    if let Err(reason) = pumped {
        return Ok(failed(reason));
    }
    Ok(exited(client, engine, name).await)
}

/// How the container ended: its exit code, and whether the memory limit killed it.
async fn exited(client: &Docker, engine: &Engine, name: &str) -> Outcome {
    let code = match client.wait_container(name, None).next().await {
        Some(Ok(response)) => response.status_code,
        Some(Err(DockerError::DockerContainerWaitError { code, .. })) => code,
        Some(Err(e)) => return failed(format!("lost track of the container: {e}")),
        None => return failed("lost track of the container: the engine ended the wait".into()),
    };
    let oom = match client.inspect_container(name, None).await {
        Ok(inspected) => inspected
            .state
            .and_then(|state| state.oom_killed)
            .unwrap_or(false),
        Err(e) => return failed(format!("lost track of the container: {e}")),
    };
    let code = i32::try_from(code).unwrap_or(-1);
    if oom {
        return Outcome::Finished(TaskEvent::Failed {
            error: format!(
                "out of memory (limit {} MiB; the operator sets DOCKER_MEMORY_MB)",
                engine.config().memory_mb
            ),
            exit_code: Some(code),
        });
    }
    super::exited_with(code)
}

/// Emits one event per line of the container's output until it ends; an error if the
/// engine broke off the stream.
async fn pump(
    logs: impl Stream<Item = Result<LogOutput, DockerError>>,
    out: &Emitter,
) -> Result<Result<(), String>, ShuttingDown> {
    let mut logs = std::pin::pin!(logs);
    let (mut stdout, mut stderr) = (Lines::default(), Lines::default());
    let mut complete = Vec::new();
    let ended = loop {
        let event: fn(String) -> TaskEvent = match logs.next().await {
            None => break Ok(()),
            Some(Err(e)) => break Err(format!("lost the container's output: {e}")),
            Some(Ok(LogOutput::StdOut { message })) => {
                stdout.feed(&message, &mut complete);
                |line| TaskEvent::Stdout { line }
            }
            Some(Ok(LogOutput::StdErr { message })) => {
                stderr.feed(&message, &mut complete);
                |line| TaskEvent::Stderr { line }
            }
            Some(Ok(_)) => continue,
        };
        for line in complete.drain(..) {
            out.emit(event(line)).await?;
        }
    };
    if let Some(line) = stdout.finish() {
        out.emit(TaskEvent::Stdout { line }).await?;
    }
    if let Some(line) = stderr.finish() {
        out.emit(TaskEvent::Stderr { line }).await?;
    }
    Ok(ended)
}

/// Makes sure the engine has the image, pulling it when allowed.
async fn ensure_image(client: &Docker, args: &DockerArgs) -> Result<(), String> {
    let image = &args.image;
    match client.inspect_image(image).await {
        Ok(_) => return Ok(()),
        Err(DockerError::DockerResponseServerError {
            status_code: 404, ..
        }) => {}
        Err(e) => return Err(format!("cannot look up image {image}: {e}")),
    }
    if args.pull == Pull::Never {
        return Err(format!(
            "image not found: {image} (pull is \"never\": build or load it on the engine first)"
        ));
    }
    let (from_image, tag) = spec::pull_reference(image);
    let options = CreateImageOptions {
        from_image: Some(from_image),
        tag,
        ..Default::default()
    };
    let mut pulling = client.create_image(Some(options), None, None);
    while let Some(progress) = pulling.next().await {
        if let Err(e) = progress {
            return Err(format!(
                "image not found: {image} (pulling it failed: {})",
                server_message(&e)
            ));
        }
    }
    Ok(())
}

/// The engine's own words for a refused request.
fn server_message(e: &DockerError) -> String {
    match e {
        DockerError::DockerResponseServerError { message, .. } => message.clone(),
        other => other.to_string(),
    }
}
