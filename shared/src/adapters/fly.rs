//! Arguments of the `fly` adapter: a Fly.io Machine made for the task, through the
//! Machines API.

use serde::Deserialize;
use serde_json::{Map, Value};

/// The keys of a Machine's config a task may set: its environment, size, command and how
/// it is stopped. Others (`mounts`, `files`, `services`, `processes`, …) would reach the
/// app's volumes, secrets or traffic.
pub const CONFIG_KEYS: [&str; 4] = ["env", "guest", "init", "stop_config"];

/// Arguments of the `fly` adapter.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlyArgs {
    /// The Fly app the Machine is made in (it must exist).
    pub app: String,
    /// The image the Machine runs (`registry.fly.io/app:tag`, `busybox`).
    pub image: String,
    /// The region to make it in (`ord`, `fra`); Fly picks one when absent.
    pub region: Option<String>,
    /// More of the Machine's `config`, as the Machines API takes it: only [`CONFIG_KEYS`]
    /// (no mounts, files, services or secrets of the app).
    #[serde(default)]
    pub config: Map<String, Value>,
}

impl FlyArgs {
    /// Checks what serde cannot: the error says what to fix.
    pub(super) fn check(&self) -> Result<(), String> {
        let name_ok = |s: &str, max: usize| {
            !s.is_empty()
                && s.len() <= max
                && s.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        };
        if !name_ok(&self.app, 63) {
            return Err("fly args: app must be a Fly app name: lowercase letters, digits and '-', at most 63".into());
        }
        let image = self.image.trim();
        if image.is_empty() || image.len() > 512 || image.chars().any(char::is_whitespace) {
            return Err("fly args: image must be an image reference such as \"registry.fly.io/app:v1\" (no spaces)".into());
        }
        if self.region.as_deref().is_some_and(|r| !name_ok(r, 16)) {
            return Err("fly args: region must be a Fly region code such as \"ord\"".into());
        }
        if let Some(key) = self
            .config
            .keys()
            .find(|key| !CONFIG_KEYS.contains(&key.as_str()))
        {
            return Err(format!(
                "fly args: config.{key} may not be set: a task's Machine config takes only {} (the image is args.image)",
                CONFIG_KEYS.join(", ")
            ));
        }
        Ok(())
    }
}
