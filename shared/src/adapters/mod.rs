//! Adapter arguments (§3.8), parsed by command-api (to reject bad input at once) and by
//! workers (to run it).

mod docker;
mod fly;

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

pub use docker::{DockerArgs, Pull};
pub use fly::{CONFIG_KEYS as FLY_CONFIG_KEYS, FlyArgs};

/// The longest `message` of a mock task.
const MAX_MOCK_MESSAGE: usize = 1_000;

/// Arguments of the `mock` adapter.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MockArgs {
    /// How many `progress` events to emit.
    #[serde(default = "default_steps")]
    pub steps: u32,
    /// Pause before each step.
    #[serde(default = "default_interval_ms")]
    pub interval_ms: u64,
    /// Fail at this step instead of finishing.
    pub fail_at: Option<u32>,
    /// The progress message, shown as `"<message> k/steps"`.
    #[serde(default = "default_message")]
    pub message: String,
}

fn default_steps() -> u32 {
    5
}

fn default_interval_ms() -> u64 {
    100
}

fn default_message() -> String {
    "step".into()
}

/// Arguments of the `shell` adapter.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShellArgs {
    /// A string for `/bin/sh -c`, or an argv list.
    pub command: ShellCommand,
    /// A directory inside the task's own working directory (relative, without `..`).
    pub cwd: Option<String>,
    /// Extra environment variables (the server's own environment is never passed on).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

/// A command: a script (for `/bin/sh -c`) or an argv.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum ShellCommand {
    /// Run with `/bin/sh -c`.
    Script(String),
    /// Run directly.
    Argv(Vec<String>),
}

/// Parsed arguments of any adapter.
#[derive(Debug, Clone, PartialEq)]
pub enum AdapterArgs {
    /// `mock`.
    Mock(MockArgs),
    /// `shell`.
    Shell(ShellArgs),
    /// `docker`.
    Docker(DockerArgs),
    /// `fly`.
    Fly(FlyArgs),
}

/// Parses and checks `args` for `adapter`; the error says what to fix.
pub fn parse(adapter: &str, args: &Value) -> Result<AdapterArgs, String> {
    check_values(args)?;
    match adapter {
        "mock" => {
            let mock: MockArgs = from_value(args, "mock")?;
            if mock.steps > 100_000 || mock.interval_ms > 3_600_000 {
                return Err(
                    "mock args: steps may be at most 100000 and interval_ms at most 3600000".into(),
                );
            }
            if mock.message.chars().count() > MAX_MOCK_MESSAGE {
                return Err(format!(
                    "mock args: message may be at most {MAX_MOCK_MESSAGE} characters"
                ));
            }
            if mock.fail_at.is_some_and(|k| k == 0 || k > mock.steps) {
                return Err(format!(
                    "mock args: fail_at must be between 1 and steps ({})",
                    mock.steps
                ));
            }
            Ok(AdapterArgs::Mock(mock))
        }
        "shell" => {
            let shell: ShellArgs = from_value(args, "shell")?;
            let empty = match &shell.command {
                ShellCommand::Script(script) => script.trim().is_empty(),
                ShellCommand::Argv(argv) => argv.first().is_none_or(|program| program.is_empty()),
            };
            if empty {
                return Err("shell args: command must be a non-empty string or argv list".into());
            }
            let nul = |s: &String| s.contains('\0');
            let has_nul = match &shell.command {
                ShellCommand::Script(script) => nul(script),
                ShellCommand::Argv(argv) => argv.iter().any(nul),
            } || shell.cwd.as_ref().is_some_and(nul)
                || shell
                    .env
                    .iter()
                    .any(|(k, v)| nul(k) || nul(v) || k.contains('='));
            if has_nul {
                return Err("shell args: command, cwd and env may not contain NUL, and env names may not contain '='".into());
            }
            let outside = shell.cwd.as_deref().is_some_and(|cwd| {
                let path = std::path::Path::new(cwd);
                path.is_absolute()
                    || path
                        .components()
                        .any(|c| matches!(c, std::path::Component::ParentDir))
            });
            if outside {
                return Err("shell args: cwd is a directory inside the task's own working directory: a relative path without '..'".into());
            }
            Ok(AdapterArgs::Shell(shell))
        }
        "docker" => {
            let docker: DockerArgs = from_value(args, "docker")?;
            docker.check()?;
            Ok(AdapterArgs::Docker(docker))
        }
        "fly" => {
            let fly: FlyArgs = from_value(args, "fly")?;
            fly.check()?;
            Ok(AdapterArgs::Fly(fly))
        }
        other => Err(format!("no adapter named '{other}'")),
    }
}

/// Deserializes `args`; an error names the field it is about (`docker args: env.A: invalid
/// type: integer `1`, expected a string`).
fn from_value<T: serde::de::DeserializeOwned>(args: &Value, adapter: &str) -> Result<T, String> {
    serde_path_to_error::deserialize(args).map_err(|e| {
        let path = e.path().to_string();
        if path == "." {
            format!("{adapter} args: {}", e.inner())
        } else {
            format!("{adapter} args: {path}: {}", e.inner())
        }
    })
}

/// Payloads are hashed as canonical JSON, which every language writes alike only for
/// integers of up to 53 bits: other numbers are refused. Postgres cannot store NUL
/// characters: strings holding one are refused too.
fn check_values(value: &Value) -> Result<(), String> {
    const MAX: i64 = (1 << 53) - 1;
    let no_nul = |s: &str| {
        if s.contains('\0') {
            Err("args hold a NUL character (\\u0000), which cannot be stored; remove it".to_owned())
        } else {
            Ok(())
        }
    };
    match value {
        Value::Number(n) => match n.as_i64() {
            Some(i) if (-MAX..=MAX).contains(&i) => Ok(()),
            _ => Err(format!(
                "args hold the number {n}; use integers between -(2^53-1) and 2^53-1 (or strings)"
            )),
        },
        Value::String(s) => no_nul(s),
        Value::Array(items) => items.iter().try_for_each(check_values),
        Value::Object(map) => map
            .iter()
            .try_for_each(|(key, value)| no_nul(key).and_then(|()| check_values(value))),
        Value::Bool(_) | Value::Null => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn mock_defaults() {
        let parsed = parse("mock", &json!({})).expect("valid");
        assert_eq!(
            parsed,
            AdapterArgs::Mock(MockArgs {
                steps: 5,
                interval_ms: 100,
                fail_at: None,
                message: "step".into()
            })
        );
    }

    #[test]
    fn shell_forms() {
        assert!(parse("shell", &json!({"command": "echo hi"})).is_ok());
        assert!(
            parse(
                "shell",
                &json!({"command": ["ls", "-l"], "env": {"A": "1"}})
            )
            .is_ok()
        );
        assert!(parse("shell", &json!({"command": ""})).is_err());
        assert!(parse("shell", &json!({"command": []})).is_err());
        assert!(parse("shell", &json!({})).is_err());
        assert!(parse("shell", &json!({"command": "x", "env": {"A=B": "1"}})).is_err());
        assert!(parse("shell", &json!({"command": "x", "cwd": "src/app"})).is_ok());
        for outside in ["/etc", "../x", "a/../../b"] {
            assert!(parse("shell", &json!({"command": "x", "cwd": outside})).is_err());
        }
    }

    #[test]
    fn docker_forms() {
        for image in [
            "busybox",
            "localhost:5000/team/app:1.2",
            "app@sha256:0123abcd",
        ] {
            assert!(parse("docker", &json!({"image": image})).is_ok(), "{image}");
        }
        let parsed = parse("docker", &json!({"image": "busybox"})).expect("valid");
        let AdapterArgs::Docker(docker) = parsed else {
            panic!("docker args")
        };
        assert_eq!(docker.pull, Pull::Missing);
        assert_eq!(docker.workdir(), "/work");
        assert_eq!(docker.argv(), None);
        let parsed = parse(
            "docker",
            &json!({"image": "b", "command": "echo hi", "env": {"A": "1"}, "workdir": "/src", "pull": "never"}),
        )
        .expect("valid");
        let AdapterArgs::Docker(docker) = parsed else {
            panic!("docker args")
        };
        assert_eq!(
            docker.argv(),
            Some(vec!["/bin/sh".into(), "-c".into(), "echo hi".into()])
        );
        assert_eq!(docker.pull, Pull::Never);
        for (args, names) in [
            (json!({}), "image"),
            (json!({"image": 5}), "image"),
            (json!({"image": ""}), "image"),
            (json!({"image": "a b"}), "image"),
            (json!({"image": "x/../../containers/abc"}), "image"),
            (json!({"image": "busybox?z=1"}), "image"),
            (json!({"image": "b", "command": 5}), "command"),
            (json!({"image": "b", "command": []}), "command"),
            (json!({"image": "b", "env": {"A": 1}}), "env.A"),
            (json!({"image": "b", "env": {"A=B": "1"}}), "env"),
            (json!({"image": "b", "workdir": "rel"}), "workdir"),
            (json!({"image": "b", "workdir": "/a/../b"}), "workdir"),
            (json!({"image": "b", "pull": "always"}), "pull"),
            (json!({"image": "b", "imagee": "c"}), "imagee"),
        ] {
            let err = parse("docker", &args).expect_err("invalid");
            assert!(err.contains(names), "{args}: {err}");
        }
    }

    #[test]
    fn fly_forms() {
        let parsed = parse(
            "fly",
            &json!({"app": "my-app", "image": "registry.fly.io/my-app:v1", "region": "ord",
                    "config": {"env": {"A": "1"}, "guest": {"cpus": 1}}}),
        )
        .expect("valid");
        let AdapterArgs::Fly(fly) = parsed else {
            panic!("fly args")
        };
        assert_eq!(fly.region.as_deref(), Some("ord"));
        assert!(fly.config.contains_key("guest"));
        for (args, names) in [
            (json!({"image": "b"}), "app"),
            (json!({"app": "a"}), "image"),
            (json!({"app": "My App", "image": "b"}), "app"),
            (json!({"app": "a", "image": 5}), "image"),
            (
                json!({"app": "a", "image": "b", "region": "O R D"}),
                "region",
            ),
            (json!({"app": "a", "image": "b", "config": []}), "config"),
            (
                json!({"app": "a", "image": "b", "config": {"image": "c"}}),
                "config.image",
            ),
        ] {
            let err = parse("fly", &args).expect_err("invalid");
            assert!(err.contains(names), "{args}: {err}");
        }
    }

    #[test]
    fn bad_args_say_what_to_fix() {
        let err = parse("mock", &json!({"steps": 2, "fail_at": 3})).expect_err("invalid");
        assert!(err.contains("fail_at"), "{err}");
        let err = parse("mock", &json!({"stepz": 2})).expect_err("invalid");
        assert!(err.contains("stepz"), "{err}");
        let err = parse("mock", &json!({"steps": 1.5})).expect_err("invalid");
        assert!(err.contains("integers"), "{err}");
        let err = parse("shell", &json!({"command": "x", "n": 9007199254740993_i64}))
            .expect_err("invalid");
        assert!(err.contains("integers"), "{err}");
    }
}
