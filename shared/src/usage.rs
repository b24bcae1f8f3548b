//! Usage counters per tenant and UTC day (`usage_counters`): what each metric counts, and
//! adding to them in one statement. The projector counts from the events it logs (in its
//! batch's transaction); query-api counts what it streams.

use chrono::NaiveDate;
use sqlx::PgExecutor;
use uuid::Uuid;

/// Tasks started (`requested` events logged).
pub const TASKS_STARTED: &str = "tasks_started";
/// Milliseconds from each task's first start to its end, on the day it ended.
pub const TASK_MS: &str = "task_ms";
/// Events logged.
pub const EVENTS: &str = "events";
/// Bytes of event data sent over SSE.
pub const BYTES_STREAMED: &str = "bytes_streamed";
/// SSE streams opened.
pub const STREAM_CONNECTIONS: &str = "stream_connections";

/// Amounts to add, as columns.
#[derive(Debug, Default)]
pub struct Additions {
    tenants: Vec<Uuid>,
    days: Vec<NaiveDate>,
    metrics: Vec<&'static str>,
    values: Vec<i64>,
}

impl Additions {
    /// One more amount.
    pub fn push(&mut self, tenant: Uuid, day: NaiveDate, metric: &'static str, value: i64) {
        self.tenants.push(tenant);
        self.days.push(day);
        self.metrics.push(metric);
        self.values.push(value);
    }

    /// Adds them all.
    pub async fn write<'e>(self, db: impl PgExecutor<'e>) -> Result<(), sqlx::Error> {
        if self.tenants.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO usage_counters (tenant_id, day, metric, value)
             SELECT * FROM UNNEST($1::uuid[], $2::date[], $3::text[], $4::bigint[])
             ON CONFLICT (tenant_id, day, metric)
             DO UPDATE SET value = usage_counters.value + EXCLUDED.value",
        )
        .bind(self.tenants)
        .bind(self.days)
        .bind(self.metrics)
        .bind(self.values)
        .execute(db)
        .await?;
        Ok(())
    }
}
