//! Short human-readable lines about a task's events, for progress messages, task status
//! messages and the text block beside structured results.

use shared::events::EventKind;
use shared::events::wire::Envelope;

/// Longest line shown for one event.
const MAX_CHARS: usize = 200;

/// One line about an event: `stdout: …`, `step 3/10 (30%)`, `failed: exit code 2`.
pub fn event(event: &Envelope) -> String {
    let payload = &event.payload;
    let text = |field: &str| payload[field].as_str().unwrap_or_default().to_owned();
    let line = match event.kind {
        EventKind::Requested => "requested".to_owned(),
        EventKind::Started => format!("started (attempt {})", payload["attempt"]),
        EventKind::Progress => match payload["percent"].as_u64() {
            Some(percent) => format!("{} ({percent}%)", text("message")),
            None => text("message"),
        },
        EventKind::Stdout => format!("stdout: {}", text("line")),
        EventKind::Stderr => format!("stderr: {}", text("line")),
        EventKind::CancelRequested => "cancel requested".to_owned(),
        EventKind::Succeeded => "succeeded".to_owned(),
        EventKind::Failed => format!("failed: {}", text("error")),
        EventKind::Canceled => "canceled".to_owned(),
        EventKind::Timeout => "timed out".to_owned(),
    };
    truncate(line)
}

/// A line about a batch of events: the last one, and how many came with it.
pub fn batch(events: &[Envelope]) -> Option<String> {
    let last = events.last()?;
    let line = event(last);
    Some(match events.len() {
        1 => line,
        n => format!("{line} (+{} more events)", n - 1),
    })
}

fn truncate(mut line: String) -> String {
    if let Some((cut, _)) = line.char_indices().nth(MAX_CHARS) {
        line.truncate(cut);
        line.push('…');
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use shared::ids::{TaskId, TenantId};

    fn envelope(kind: EventKind, payload: serde_json::Value) -> Envelope {
        Envelope {
            task_id: TaskId::new(),
            tenant_id: TenantId(uuid::Uuid::nil()),
            seq: 1,
            ts: "2026-11-27T07:19:16.123456Z".into(),
            kind,
            payload,
            hash_prev: String::new(),
            hash_curr: String::new(),
        }
    }

    #[test]
    fn lines_are_short_and_say_what_happened() {
        let out = envelope(EventKind::Stdout, json!({"line": "hello"}));
        assert_eq!(event(&out), "stdout: hello");
        let step = envelope(
            EventKind::Progress,
            json!({"message": "step 3/10", "percent": 30}),
        );
        assert_eq!(event(&step), "step 3/10 (30%)");
        let failed = envelope(EventKind::Failed, json!({"error": "exit code 2"}));
        assert_eq!(event(&failed), "failed: exit code 2");
        let long = envelope(EventKind::Stdout, json!({"line": "x".repeat(1000)}));
        assert_eq!(event(&long).chars().count(), MAX_CHARS + 1);
        assert_eq!(
            batch(&[out.clone(), out]).as_deref(),
            Some("stdout: hello (+1 more events)")
        );
        assert_eq!(batch(&[]), None);
    }
}
