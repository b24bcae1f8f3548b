//! NATS helpers shared by the roles: connecting, creating the streams idempotently, and
//! reading the last command on a subject (read-your-writes before the projector runs).

use std::time::Duration;

use async_nats::jetstream::stream::{Config as StreamConfig, DirectGetErrorKind, StorageType};
use async_nats::jetstream::{self, Context, stream::Stream};
use serde::de::DeserializeOwned;

use crate::config::StreamLimits;
use crate::names;

/// A NATS failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server could not be reached or refused the request.
    #[error("NATS: {0}")]
    Nats(String),
    /// A stored message is not what this version expects.
    #[error("message on {subject} is not valid: {reason}")]
    Payload {
        /// Where it was.
        subject: String,
        /// Why it does not parse.
        reason: String,
    },
}

impl Error {
    /// Wraps any async-nats error.
    pub fn nats(e: impl std::fmt::Display) -> Self {
        Self::Nats(e.to_string())
    }
}

/// The two streams, created if missing.
#[derive(Debug, Clone)]
pub struct Streams {
    /// Commands and worker events.
    pub axon: Stream,
    /// Chained log events.
    pub log: Stream,
    /// Signed tree heads.
    pub heads: Stream,
}

/// Connects to NATS as the user named in `url` (`nats://USER:PASSWORD@host:port`), if any,
/// and returns a JetStream context whose publish acks may be in flight up to the client's
/// limit.
pub async fn connect(url: &str, name: &str) -> Result<(async_nats::Client, Context), Error> {
    let (address, credentials) = split_credentials(url)?;
    let mut options = async_nats::ConnectOptions::new();
    if let Some((user, password)) = credentials {
        options = options.user_and_password(user, password);
    }
    let client = options
        .name(name)
        .retry_on_initial_connect()
        .connection_timeout(Duration::from_secs(5))
        .connect(address)
        .await
        .map_err(Error::nats)?;
    let js = jetstream::ContextBuilder::new()
        .timeout(Duration::from_secs(10))
        .build(client.clone());
    Ok((client, js))
}

/// `url` without its user and password (so no log shows them), and those, decoded.
fn split_credentials(url: &str) -> Result<(String, Option<(String, String)>), Error> {
    let mut parsed = url::Url::parse(url).map_err(|e| Error::Nats(format!("NATS_URL: {e}")))?;
    if parsed.username().is_empty() {
        return Ok((url.to_owned(), None));
    }
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    let user = decode(parsed.username());
    let password = decode(parsed.password().unwrap_or_default());
    // Both setters only fail for URLs that cannot have credentials, which this one had.
    let _ = parsed.set_username("");
    let _ = parsed.set_password(None);
    Ok((parsed.to_string(), Some((user, password))))
}

/// Creates streams `AXON`, `AXON_LOG` and `AXON_HEADS`, or brings their limits to `limits` (every role
/// calls this on start).
pub async fn ensure_streams(js: &Context, limits: StreamLimits) -> Result<Streams, Error> {
    let config = |name: &str, subjects: &[&str], max_age| StreamConfig {
        name: name.to_owned(),
        subjects: subjects.iter().map(|s| (*s).to_owned()).collect(),
        storage: StorageType::File,
        allow_direct: true,
        duplicate_window: Duration::from_secs(120),
        max_age,
        ..Default::default()
    };
    let axon = ensure(
        js,
        config(
            names::STREAM_AXON,
            &names::AXON_SUBJECTS,
            limits.axon_max_age,
        ),
    )
    .await?;
    let log = ensure(
        js,
        config(
            names::STREAM_AXON_LOG,
            &names::AXON_LOG_SUBJECTS,
            limits.log_max_age,
        ),
    )
    .await?;
    let heads = ensure(
        js,
        config(
            names::STREAM_AXON_HEADS,
            &names::AXON_HEADS_SUBJECTS,
            limits.heads_max_age,
        ),
    )
    .await?;
    Ok(Streams { axon, log, heads })
}

/// Creates the stream of `config`, or updates its age limit if it differs.
async fn ensure(js: &Context, config: StreamConfig) -> Result<Stream, Error> {
    let mut stream = js
        .get_or_create_stream(config.clone())
        .await
        .map_err(Error::nats)?;
    let current = stream.info().await.map_err(Error::nats)?.config.clone();
    if current.max_age != config.max_age {
        js.update_stream(StreamConfig {
            max_age: config.max_age,
            ..current
        })
        .await
        .map_err(Error::nats)?;
    }
    Ok(stream)
}

/// The first message on `subject` in `stream`, decoded; `None` if there is none.
pub async fn first_on_subject<T: DeserializeOwned>(
    stream: &Stream,
    subject: String,
) -> Result<Option<T>, Error> {
    let got = stream.direct_get_first_for_subject(subject.clone()).await;
    Ok(decoded(subject, got)?.map(|(_, message)| message))
}

/// The last message on `subject` in `stream`, decoded; `None` if there is none.
pub async fn last_on_subject<T: DeserializeOwned>(
    stream: &Stream,
    subject: String,
) -> Result<Option<T>, Error> {
    Ok(last_on_subject_at(stream, subject)
        .await?
        .map(|(_, message)| message))
}

/// The last message on `subject` in `stream`, decoded, with its stream sequence.
pub async fn last_on_subject_at<T: DeserializeOwned>(
    stream: &Stream,
    subject: String,
) -> Result<Option<(u64, T)>, Error> {
    let got = stream.direct_get_last_for_subject(subject.clone()).await;
    decoded(subject, got)
}

fn decoded<T: DeserializeOwned>(
    subject: String,
    got: Result<
        async_nats::jetstream::message::StreamMessage,
        async_nats::jetstream::stream::DirectGetError,
    >,
) -> Result<Option<(u64, T)>, Error> {
    match got {
        Ok(message) => serde_json::from_slice(&message.payload)
            .map(|decoded| Some((message.sequence, decoded)))
            .map_err(|e| Error::Payload {
                subject,
                reason: e.to_string(),
            }),
        Err(e) if matches!(e.kind(), DirectGetErrorKind::NotFound) => Ok(None),
        Err(e) => Err(Error::nats(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_leave_the_url() {
        let (address, credentials) =
            split_credentials("nats://worker:p%40ss@127.0.0.1:4222").expect("valid");
        assert_eq!(address, "nats://127.0.0.1:4222");
        assert_eq!(credentials, Some(("worker".into(), "p@ss".into())));
        let (address, credentials) = split_credentials("nats://127.0.0.1:4222").expect("valid");
        assert_eq!(
            (address.as_str(), credentials),
            ("nats://127.0.0.1:4222", None)
        );
    }
}
