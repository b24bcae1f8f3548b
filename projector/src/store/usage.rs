//! Usage counters (`shared::usage`) added from the events a batch logs, in the batch's
//! transaction: each event counts exactly once, whatever restarts.

use std::collections::BTreeMap;

use chrono::{NaiveDate, Utc};
use shared::events::EventKind;
use shared::usage::{self, Additions};
use uuid::Uuid;

use super::Batch;

/// Adds the batch's usage.
pub(super) async fn add(tx: &mut sqlx::PgConnection, batch: &Batch) -> Result<(), sqlx::Error> {
    let mut additions = Additions::default();
    for ((tenant, day, metric), value) in count(batch) {
        additions.push(tenant, day, metric, value);
    }
    additions.write(tx).await
}

fn count(batch: &Batch) -> BTreeMap<(Uuid, NaiveDate, &'static str), i64> {
    let mut counts = BTreeMap::new();
    for (event, _) in &batch.events {
        let at = shared::time::parse_ts(&event.ts).unwrap_or_else(Utc::now);
        let key = |metric| (event.tenant_id.0, at.date_naive(), metric);
        *counts.entry(key(usage::EVENTS)).or_insert(0) += 1;
        if event.kind == EventKind::Requested {
            *counts.entry(key(usage::TASKS_STARTED)).or_insert(0) += 1;
        }
        if event.kind.is_terminal() {
            let ran = batch
                .tasks
                .iter()
                .find(|t| t.task_id == event.task_id)
                .and_then(|t| t.started_at)
                .map_or(0, |started| (at - started).num_milliseconds().max(0));
            *counts.entry(key(usage::TASK_MS)).or_insert(0) += ran;
        }
    }
    counts
}
