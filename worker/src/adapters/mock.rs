//! `mock`: emits `steps` progress events, `interval_ms` apart, then succeeds, or fails at
//! `fail_at`. For trying AxonTask without running anything.

use std::time::Duration;

use serde_json::json;
use shared::adapters::MockArgs;
use shared::events::TaskEvent;
use tokio_util::sync::CancellationToken;

use super::Outcome;
use crate::emitter::{Emitter, ShuttingDown};

/// Runs the mock task.
pub async fn run(
    args: MockArgs,
    out: &Emitter,
    stop: CancellationToken,
) -> Result<Outcome, ShuttingDown> {
    for step in 1..=args.steps {
        // At 0 ms no timer (one rounds up to the timer's 1 ms tick): only a yield.
        let pace = async {
            match args.interval_ms {
                0 => tokio::task::yield_now().await,
                ms => tokio::time::sleep(Duration::from_millis(ms)).await,
            }
        };
        tokio::select! {
            () = pace => {}
            () = stop.cancelled() => return Ok(Outcome::Stopped),
        }
        if args.fail_at == Some(step) {
            return Ok(Outcome::Finished(TaskEvent::Failed {
                error: format!("mock failure at step {step}"),
                exit_code: None,
            }));
        }
        let percent =
            u8::try_from(100 * u64::from(step) / u64::from(args.steps)).expect("at most 100");
        out.emit(TaskEvent::Progress {
            message: format!("{} {step}/{}", args.message, args.steps),
            percent: Some(percent),
        })
        .await?;
    }
    Ok(Outcome::Finished(TaskEvent::Succeeded {
        result: json!({"steps": args.steps}),
    }))
}
