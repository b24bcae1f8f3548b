//! Arguments of the `docker` adapter: a container from a local (or pulled) image.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::ShellCommand;

/// The longest image reference Docker accepts (its name grammar allows 255 for the name,
/// plus a tag or digest).
const MAX_IMAGE: usize = 512;

/// Arguments of the `docker` adapter.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DockerArgs {
    /// The image, as `docker run` takes it (`busybox`, `registry.example/app:1.2`).
    pub image: String,
    /// A string for `/bin/sh -c` inside the container, or an argv list; the image's own
    /// command when absent.
    pub command: Option<ShellCommand>,
    /// Environment variables of the container (nothing of the worker's is passed on).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The container's working directory, an absolute path; a private writable directory
    /// (tmpfs) is mounted there. Default `/work`.
    pub workdir: Option<String>,
    /// When the image is pulled.
    #[serde(default)]
    pub pull: Pull,
}

/// When the `docker` adapter pulls its image.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pull {
    /// Only when the engine lacks it.
    #[default]
    Missing,
    /// Never: a missing image fails the task.
    Never,
}

impl DockerArgs {
    /// The working directory the container gets.
    pub fn workdir(&self) -> &str {
        self.workdir.as_deref().unwrap_or("/work")
    }

    /// The command as an argv (a script runs under `/bin/sh -c`); `None` for the image's
    /// own command.
    pub fn argv(&self) -> Option<Vec<String>> {
        self.command.as_ref().map(|command| match command {
            ShellCommand::Script(script) => vec!["/bin/sh".into(), "-c".into(), script.clone()],
            ShellCommand::Argv(argv) => argv.clone(),
        })
    }

    /// Checks what serde cannot: the error says what to fix.
    pub(super) fn check(&self) -> Result<(), String> {
        let image = &self.image;
        // The reference grammar's characters only: the engine's API takes the image in a URL
        // path, so no `?`, `#`, `%`, spaces or `..`.
        let reference = image
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-/:@".contains(c))
            && !image.contains("..")
            && !image.contains("//")
            && !image.starts_with(['/', '-', '.', ':', '@']);
        if image.is_empty() || image.len() > MAX_IMAGE || !reference {
            return Err(format!(
                "docker args: image must be an image reference such as \"busybox:1.36\" or \"registry.example/app@sha256:…\" (letters, digits and . _ - / : @ only, at most {MAX_IMAGE} characters)"
            ));
        }
        let empty = match &self.command {
            Some(ShellCommand::Script(script)) => script.trim().is_empty(),
            Some(ShellCommand::Argv(argv)) => argv.first().is_none_or(String::is_empty),
            None => false,
        };
        if empty {
            return Err("docker args: command must be a non-empty string or argv list (or absent, for the image's own command)".into());
        }
        let nul = |s: &String| s.contains('\0');
        let has_nul = self.argv().is_some_and(|argv| argv.iter().any(nul))
            || self.workdir.as_ref().is_some_and(nul)
            || self
                .env
                .iter()
                .any(|(k, v)| nul(k) || nul(v) || k.is_empty() || k.contains('='));
        if has_nul {
            return Err("docker args: command, workdir and env may not contain NUL, and env names must be non-empty without '='".into());
        }
        let workdir = std::path::Path::new(self.workdir());
        let plain = workdir.is_absolute()
            && workdir
                .components()
                .all(|c| !matches!(c, std::path::Component::ParentDir))
            && workdir != std::path::Path::new("/");
        if !plain {
            return Err("docker args: workdir must be an absolute path inside the container, without '..' and not '/' (a private directory is mounted there)".into());
        }
        Ok(())
    }
}
