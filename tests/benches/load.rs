//! HTTP load from `wrk` (Debian's package; `scripts/bench.sh` installs it), a load tool
//! faster than the server it drives, so the figures are the server's.

use std::time::Duration;

use anyhow::Context;
use serde_json::Value;

/// What `wrk` measured.
pub struct Wrk {
    /// Requests answered.
    pub requests: u64,
    /// Requests a second.
    pub per_second: f64,
    /// Median latency.
    pub p50: Duration,
    /// 99th percentile latency.
    pub p99: Duration,
}

/// What to send.
pub struct Load<'a> {
    /// The whole URL.
    pub url: String,
    /// The API key.
    pub key: &'a str,
    /// The JSON body of every request (a POST), or none (a GET).
    pub body: Option<&'a Value>,
    /// Connections (one thread per 16).
    pub connections: usize,
    /// How long.
    pub duration: Duration,
    /// A pause before each request on each connection, for a steady rate.
    pub pause: Option<Duration>,
}

/// Runs `wrk` with `load`; fails if any answer was not 2xx.
pub async fn run(load: &Load<'_>) -> anyhow::Result<Wrk> {
    let script = tempfile::NamedTempFile::new()?;
    let pause = load
        .pause
        .map(|p| format!("function delay() return {} end\n", p.as_millis()))
        .unwrap_or_default();
    let post = load
        .body
        .map(|body| {
            format!(
                "wrk.method = \"POST\"\nwrk.body = {:?}\nwrk.headers[\"Content-Type\"] = \"application/json\"\n",
                body.to_string()
            )
        })
        .unwrap_or_default();
    std::fs::write(
        script.path(),
        format!("{post}wrk.headers[\"X-Api-Key\"] = {:?}\n{pause}", load.key),
    )?;
    let threads = load.connections.div_ceil(16).clamp(1, 2);
    let output = tokio::process::Command::new("wrk")
        .arg(format!("-t{threads}"))
        .arg(format!("-c{}", load.connections))
        .arg(format!("-d{}s", load.duration.as_secs().max(1)))
        .arg("--latency")
        .arg("-s")
        .arg(script.path())
        .arg(&load.url)
        .output()
        .await
        .context("running wrk (apt-get install wrk)")?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    anyhow::ensure!(output.status.success(), "wrk failed: {text}");
    anyhow::ensure!(
        !text.contains("Non-2xx"),
        "some answers were not 2xx:\n{text}"
    );
    parse(&text)
}

fn parse(text: &str) -> anyhow::Result<Wrk> {
    let field = |prefix: &str| {
        text.lines()
            .map(str::trim)
            .find_map(|line| line.strip_prefix(prefix))
            .map(str::trim)
            .with_context(|| format!("no '{prefix}' in wrk's output:\n{text}"))
    };
    let requests = text
        .lines()
        .find(|line| line.contains(" requests in "))
        .and_then(|line| line.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("no request count in wrk's output:\n{text}"))?;
    Ok(Wrk {
        requests,
        per_second: field("Requests/sec:")?.parse()?,
        p50: duration(field("50%")?)?,
        p99: duration(field("99%")?)?,
    })
}

/// `wrk`'s durations: `812.00us`, `1.23ms`, `2.01s`.
fn duration(text: &str) -> anyhow::Result<Duration> {
    let split = text
        .find(|c: char| c.is_ascii_alphabetic())
        .with_context(|| format!("no unit in '{text}'"))?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse()?;
    let seconds = match unit {
        "us" => number / 1e6,
        "ms" => number / 1e3,
        "s" => number,
        "m" => number * 60.0,
        _ => anyhow::bail!("unknown unit in '{text}'"),
    };
    Ok(Duration::from_secs_f64(seconds))
}
