//! The Docker engine of `DOCKER_HOST` (started by `AXON_WITH_DOCKER=1 scripts/services.sh`,
//! which the test command runs): a test image built here from nothing but the machine's
//! static busybox (no registry is reachable), and the containers of a task, by label.

use std::process::Stdio;

use anyhow::Context;
use tokio::process::Command;
use tokio::sync::OnceCell;

/// The test image: busybox as `/bin/*` in an otherwise empty image.
pub const BUSYBOX_IMAGE: &str = "axontask-test/busybox:1";

static BUILT: OnceCell<()> = OnceCell::const_new();

/// Builds [`BUSYBOX_IMAGE`] once per test process (the engine caches its layers).
pub async fn busybox_image() -> anyhow::Result<&'static str> {
    BUILT
        .get_or_try_init(|| async {
            let context = tempfile::tempdir()?;
            std::fs::copy("/bin/busybox", context.path().join("busybox"))
                .context("copying /bin/busybox (Debian's busybox-static) into the image")?;
            std::fs::write(
                context.path().join("Dockerfile"),
                "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n",
            )?;
            let context = context.path().display().to_string();
            docker(&["build", "-q", "-t", BUSYBOX_IMAGE, &context]).await?;
            anyhow::Ok(())
        })
        .await?;
    Ok(BUSYBOX_IMAGE)
}

/// The ids of every container (running or not) labelled with `task_id`.
pub async fn containers_of(task_id: &str) -> anyhow::Result<Vec<String>> {
    let label = format!("label=axontask.task_id={task_id}");
    let listed = docker(&["ps", "-a", "-q", "--filter", &label]).await?;
    Ok(listed.lines().map(str::to_owned).collect())
}

/// Runs the docker CLI against `DOCKER_HOST`; its standard output.
pub async fn docker(args: &[&str]) -> anyhow::Result<String> {
    anyhow::ensure!(
        std::env::var_os("DOCKER_HOST").is_some(),
        "DOCKER_HOST is not set: run the tests with scripts/test.sh (it starts the engine with AXON_WITH_DOCKER=1)"
    );
    let output = Command::new("docker")
        .args(args)
        .env("DOCKER_BUILDKIT", "0")
        .stdin(Stdio::null())
        .output()
        .await
        .context("running the docker CLI (Debian's docker.io)")?;
    anyhow::ensure!(
        output.status.success(),
        "docker {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8(output.stdout)?)
}
