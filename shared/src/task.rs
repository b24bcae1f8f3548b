//! The task state machine, as a cqrs-es aggregate: pure, no IO. The projector feeds it the
//! AXON stream in order (commands and worker reports) and logs the events it emits.

use cqrs_es::Aggregate;
use cqrs_es::event_sink::EventSink;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::events::TaskEvent;

/// Where a task is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Accepted, not yet started by a worker.
    Pending,
    /// A worker runs it.
    Running,
    /// Ended well.
    Succeeded,
    /// Ended badly.
    Failed,
    /// Ran past its timeout.
    Timeout,
    /// Stopped on request.
    Canceled,
}

impl TaskState {
    /// The snake_case name stored in `tasks.state` and shown in status.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Timeout => "timeout",
            Self::Canceled => "canceled",
        }
    }

    /// Parses a stored state name.
    pub fn parse(name: &str) -> Option<Self> {
        [
            Self::Pending,
            Self::Running,
            Self::Succeeded,
            Self::Failed,
            Self::Timeout,
            Self::Canceled,
        ]
        .into_iter()
        .find(|s| s.as_str() == name)
    }

    /// True once the task has ended.
    pub fn is_terminal(self) -> bool {
        !matches!(self, Self::Pending | Self::Running)
    }
}

/// What may be asked of a task.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskCommand {
    /// Accept a new task.
    Request {
        /// The client's name for the task.
        name: String,
        /// The adapter to run it with.
        adapter: String,
        /// The adapter's arguments.
        args: Value,
        /// Seconds before it times out.
        timeout_s: Option<u32>,
    },
    /// Stop the task (or never start it).
    Cancel,
    /// Record what a worker reports for one attempt.
    Report {
        /// The attempt the report belongs to.
        attempt: u32,
        /// What the worker reports (never `requested` or `cancel_requested`).
        event: TaskEvent,
    },
}

/// Why a command changes nothing.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// The task was already requested.
    #[error("task was already requested")]
    AlreadyRequested,
    /// No start command was seen for the task.
    #[error("task was never requested")]
    NotRequested,
    /// The task has ended; nothing follows a terminal event.
    #[error("task already ended as {0:?}")]
    Ended(TaskState),
    /// A cancel was already requested.
    #[error("cancel was already requested")]
    AlreadyCanceling,
    /// The report is from an attempt that is no longer the current one.
    #[error("report from attempt {got}, but the current attempt is {current}")]
    StaleAttempt {
        /// The report's attempt.
        got: u32,
        /// The current attempt.
        current: u32,
    },
    /// A worker reported a kind only the projector may log.
    #[error("workers cannot report {0}")]
    NotReportable(&'static str),
}

/// A task's state as far as decisions need it. The log itself is chained elsewhere.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Task {
    /// `None` until requested.
    pub state: Option<TaskState>,
    /// The current attempt (0 before the first start).
    pub attempt: u32,
    /// Whether a cancel was requested.
    pub cancel_requested: bool,
}

impl Task {
    fn live_state(&self) -> Result<TaskState, Error> {
        match self.state {
            None => Err(Error::NotRequested),
            Some(state) if state.is_terminal() => Err(Error::Ended(state)),
            Some(state) => Ok(state),
        }
    }

    fn decide(&self, command: TaskCommand) -> Result<Vec<TaskEvent>, Error> {
        match command {
            TaskCommand::Request {
                name,
                adapter,
                args,
                timeout_s,
            } => match self.state {
                Some(_) => Err(Error::AlreadyRequested),
                None => Ok(vec![TaskEvent::Requested {
                    name,
                    adapter,
                    args,
                    timeout_s,
                }]),
            },
            TaskCommand::Cancel => match self.live_state()? {
                _ if self.cancel_requested => Err(Error::AlreadyCanceling),
                TaskState::Pending => {
                    Ok(vec![TaskEvent::CancelRequested {}, TaskEvent::Canceled {}])
                }
                _ => Ok(vec![TaskEvent::CancelRequested {}]),
            },
            TaskCommand::Report { attempt, event } => self.decide_report(attempt, event),
        }
    }

    fn decide_report(&self, attempt: u32, event: TaskEvent) -> Result<Vec<TaskEvent>, Error> {
        let state = self.live_state()?;
        let stale = Error::StaleAttempt {
            got: attempt,
            current: self.attempt,
        };
        let ok = match &event {
            TaskEvent::Requested { .. } | TaskEvent::CancelRequested {} => {
                return Err(Error::NotReportable(event.kind().as_str()));
            }
            // A new attempt replaces a lost worker's.
            TaskEvent::Started { .. } => attempt > self.attempt,
            // Terminal reports may come from a worker that took over without starting
            // (a cancel it found, or the attempt limit reached).
            TaskEvent::Succeeded { .. }
            | TaskEvent::Failed { .. }
            | TaskEvent::Canceled {}
            | TaskEvent::Timeout {} => attempt >= self.attempt,
            TaskEvent::Progress { .. } | TaskEvent::Stdout { .. } | TaskEvent::Stderr { .. } => {
                attempt == self.attempt && state == TaskState::Running
            }
        };
        if ok { Ok(vec![event]) } else { Err(stale) }
    }
}

impl Aggregate for Task {
    const TYPE: &'static str = "task";
    type Command = TaskCommand;
    type Event = TaskEvent;
    type Error = Error;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        for event in self.decide(command)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            TaskEvent::Requested { .. } => self.state = Some(TaskState::Pending),
            TaskEvent::Started { attempt, .. } => {
                self.state = Some(TaskState::Running);
                self.attempt = attempt;
            }
            TaskEvent::CancelRequested {} => self.cancel_requested = true,
            TaskEvent::Succeeded { .. } => self.state = Some(TaskState::Succeeded),
            TaskEvent::Failed { .. } => self.state = Some(TaskState::Failed),
            TaskEvent::Canceled {} => self.state = Some(TaskState::Canceled),
            TaskEvent::Timeout {} => self.state = Some(TaskState::Timeout),
            TaskEvent::Progress { .. } | TaskEvent::Stdout { .. } | TaskEvent::Stderr { .. } => {}
        }
    }
}

/// Runs one command against a task and returns the events it emitted (already applied).
pub async fn execute(task: &mut Task, command: TaskCommand) -> Result<Vec<TaskEvent>, Error> {
    let sink = EventSink::default();
    task.handle(command, &(), &sink).await?;
    Ok(sink.collect().await)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;
    use serde_json::json;

    type Given = TestFramework<Task>;

    fn requested() -> TaskEvent {
        TaskEvent::Requested {
            name: "build".into(),
            adapter: "mock".into(),
            args: json!({}),
            timeout_s: None,
        }
    }

    fn started(attempt: u32) -> TaskEvent {
        TaskEvent::Started {
            worker_id: "w1".into(),
            attempt,
        }
    }

    fn report(attempt: u32, event: TaskEvent) -> TaskCommand {
        TaskCommand::Report { attempt, event }
    }

    fn stdout() -> TaskEvent {
        TaskEvent::Stdout { line: "hi".into() }
    }

    #[tokio::test]
    async fn request_then_not_again() {
        let TaskEvent::Requested {
            name,
            adapter,
            args,
            timeout_s,
        } = requested()
        else {
            unreachable!()
        };
        let request = TaskCommand::Request {
            name,
            adapter,
            args,
            timeout_s,
        };
        Given::with(())
            .given_no_previous_events()
            .when_async(request.clone())
            .await
            .then_expect_events(vec![requested()]);
        Given::with(())
            .given(vec![requested()])
            .when_async(request)
            .await
            .then_expect_error(Error::AlreadyRequested);
    }

    #[tokio::test]
    async fn cancel_pending_ends_it_and_cancel_running_asks_the_worker() {
        Given::with(())
            .given(vec![requested()])
            .when_async(TaskCommand::Cancel)
            .await
            .then_expect_events(vec![TaskEvent::CancelRequested {}, TaskEvent::Canceled {}]);
        Given::with(())
            .given(vec![requested(), started(1)])
            .when_async(TaskCommand::Cancel)
            .await
            .then_expect_events(vec![TaskEvent::CancelRequested {}]);
        Given::with(())
            .given(vec![requested(), started(1), TaskEvent::CancelRequested {}])
            .when_async(TaskCommand::Cancel)
            .await
            .then_expect_error(Error::AlreadyCanceling);
    }

    #[tokio::test]
    async fn nothing_follows_a_terminal_event() {
        let ended = vec![
            requested(),
            started(1),
            TaskEvent::Succeeded { result: json!(1) },
        ];
        Given::with(())
            .given(ended.clone())
            .when_async(report(1, stdout()))
            .await
            .then_expect_error(Error::Ended(TaskState::Succeeded));
        Given::with(())
            .given(ended)
            .when_async(TaskCommand::Cancel)
            .await
            .then_expect_error(Error::Ended(TaskState::Succeeded));
    }

    #[tokio::test]
    async fn a_new_attempt_replaces_a_lost_worker_and_silences_the_old_one() {
        Given::with(())
            .given(vec![requested(), started(1)])
            .when_async(report(2, started(2)))
            .await
            .then_expect_events(vec![started(2)]);
        Given::with(())
            .given(vec![requested(), started(1), started(2)])
            .when_async(report(1, stdout()))
            .await
            .then_expect_error(Error::StaleAttempt { got: 1, current: 2 });
        Given::with(())
            .given(vec![requested(), started(2)])
            .when_async(report(2, started(2)))
            .await
            .then_expect_error(Error::StaleAttempt { got: 2, current: 2 });
    }

    #[tokio::test]
    async fn output_needs_a_running_attempt() {
        Given::with(())
            .given(vec![requested()])
            .when_async(report(0, stdout()))
            .await
            .then_expect_error(Error::StaleAttempt { got: 0, current: 0 });
        Given::with(())
            .given(vec![requested(), started(1)])
            .when_async(report(1, stdout()))
            .await
            .then_expect_events(vec![stdout()]);
    }

    #[tokio::test]
    async fn a_taking_over_worker_may_end_the_task() {
        let failed = TaskEvent::Failed {
            error: "lost".into(),
            exit_code: None,
        };
        Given::with(())
            .given(vec![requested(), started(3)])
            .when_async(report(4, failed.clone()))
            .await
            .then_expect_events(vec![failed]);
    }

    #[tokio::test]
    async fn workers_cannot_report_projector_kinds() {
        Given::with(())
            .given(vec![requested(), started(1)])
            .when_async(report(1, TaskEvent::CancelRequested {}))
            .await
            .then_expect_error(Error::NotReportable("cancel_requested"));
    }

    #[tokio::test]
    async fn execute_applies_what_it_emits() {
        let mut task = Task::default();
        let events = execute(&mut task, TaskCommand::Cancel).await;
        assert_eq!(events, Err(Error::NotRequested));
        assert_eq!(task.state, None);
        for event in [requested(), started(1)] {
            task.apply(event);
        }
        let events = execute(&mut task, TaskCommand::Cancel).await;
        assert_eq!(events, Ok(vec![TaskEvent::CancelRequested {}]));
        assert!(task.cancel_requested);
        assert_eq!(TaskState::parse("running"), Some(TaskState::Running));
    }
}
