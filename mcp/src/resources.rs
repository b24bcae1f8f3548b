//! Task resources: `axontask://tasks/{task_id}` (the status JSON) and
//! `axontask://tasks/{task_id}/events` (the NDJSON log, its first 1,000 events at most; the
//! `_meta` of a longer one says where to read on), and on 2025-11-25 sessions
//! `resources/subscribe`, which sends `notifications/resources/updated` as the task moves.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rmcp::model::{
    ErrorData as McpError, JsonObject, ListResourceTemplatesResult, ListResourcesResult,
    MetaObject, ReadResourceResult, Resource, ResourceContents, ResourceTemplate,
    ResourceUpdatedNotificationParam,
};
use rmcp::{Peer, RoleServer};
use serde_json::json;
use shared::auth::{Principal, Scope};
use shared::ids::{TaskId, TenantId};
use tokio_util::sync::CancellationToken;

use crate::Backend;
use crate::auth::tenant_for;
use crate::tasks::protocol_error;

const PREFIX: &str = "axontask://tasks/";
const EVENTS_SUFFIX: &str = "/events";
/// Tasks listed by `resources/list`.
const LISTED: usize = 50;

/// What a task resource URI names.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Target {
    Status(TaskId),
    Events(TaskId),
}

impl Target {
    fn parse(uri: &str) -> Option<Self> {
        let rest = uri.strip_prefix(PREFIX)?;
        match rest.strip_suffix(EVENTS_SUFFIX) {
            Some(id) => id.parse().ok().map(Self::Events),
            None => rest.parse().ok().map(Self::Status),
        }
    }

    fn task(self) -> TaskId {
        match self {
            Self::Status(task) | Self::Events(task) => task,
        }
    }
}

fn not_found(uri: &str) -> McpError {
    McpError::resource_not_found(
        format!(
            "no resource {uri}; task resources are {PREFIX}{{task_id}} and {PREFIX}{{task_id}}/events for your own tasks"
        ),
        None,
    )
}

/// The two resource templates.
pub fn templates() -> ListResourceTemplatesResult {
    ListResourceTemplatesResult::with_all_items(vec![
        ResourceTemplate::new(format!("{PREFIX}{{task_id}}"), "task-status")
            .with_title("A task's status")
            .with_description("State, timestamps, last_seq and outcome of one of your tasks")
            .with_mime_type("application/json"),
        ResourceTemplate::new(format!("{PREFIX}{{task_id}}/events"), "task-events")
            .with_title("A task's event log")
            .with_description("Every event of one of your tasks, hash-chained, one JSON per line")
            .with_mime_type("application/x-ndjson"),
    ])
}

/// The caller's most recent tasks, as status resources.
pub async fn list(backend: &Backend, caller: &Principal) -> Result<ListResourcesResult, McpError> {
    let tenant = tenant_for(caller, Scope::TasksRead).map_err(protocol_error)?;
    let query = query_api::reads::ListQuery {
        limit: Some(LISTED),
        ..Default::default()
    };
    let page = query_api::reads::list(&backend.queries, tenant, &query)
        .await
        .map_err(protocol_error)?;
    let resources = page
        .tasks
        .iter()
        .map(|task| {
            Resource::new(format!("{PREFIX}{}", task.task_id), task.name.clone())
                .with_description(format!("{} task, {}", task.adapter, task.state))
                .with_mime_type("application/json")
        })
        .collect();
    Ok(ListResourcesResult::with_all_items(resources))
}

/// Whether `uri` is a task resource (as opposed to another resource of this server).
pub fn is_task_uri(uri: &str) -> bool {
    uri.starts_with(PREFIX)
}

/// `resources/read` of a task resource.
pub async fn read(
    backend: &Backend,
    caller: &Principal,
    uri: &str,
) -> Result<ReadResourceResult, McpError> {
    let tenant = tenant_for(caller, Scope::TasksRead).map_err(protocol_error)?;
    let target = Target::parse(uri).ok_or_else(|| not_found(uri))?;
    let status = query_api::reads::status(&backend.queries, tenant, target.task())
        .await
        .map_err(|e| {
            if e.status.is_server_error() {
                protocol_error(e)
            } else {
                not_found(uri)
            }
        })?;
    let contents = match target {
        Target::Status(_) => ResourceContents::text(
            serde_json::to_string(&status).expect("status serializes"),
            uri,
        )
        .with_mime_type("application/json"),
        Target::Events(task) => {
            let page = query_api::reads::page(
                &backend.queries,
                tenant,
                task,
                0,
                query_api::reads::MAX_LIMIT,
            )
            .await
            .map_err(protocol_error)?;
            let mut text = String::new();
            for event in &page.events {
                text.push_str(&serde_json::to_string(event).expect("envelopes serialize"));
                text.push('\n');
            }
            let contents = ResourceContents::text(text, uri).with_mime_type("application/x-ndjson");
            if page.events.len() < query_api::reads::MAX_LIMIT {
                contents
            } else {
                // One page at most: a long log is read with the events tool or the HTTP API.
                let mut meta = JsonObject::new();
                meta.insert(
                    "io.axontask/next".into(),
                    json!(format!(
                        "the first {} events; read on with stream_task (since_seq {}) or GET /mcp/tasks/{task}/events?since_seq={}",
                        page.events.len(),
                        page.next_seq,
                        page.next_seq
                    )),
                );
                contents.with_meta(MetaObject(meta))
            }
        }
    };
    Ok(ReadResourceResult::new(vec![contents]))
}

/// The resource subscriptions of one session; dropping it ends them all.
#[derive(Default)]
pub struct Subscriptions {
    active: Mutex<HashMap<String, CancellationToken>>,
}

impl Subscriptions {
    /// Starts sending `notifications/resources/updated` for `uri` as its task moves.
    pub async fn subscribe(
        self: &Arc<Self>,
        backend: &Backend,
        caller: &Principal,
        uri: &str,
        peer: Peer<RoleServer>,
    ) -> Result<(), McpError> {
        let tenant = tenant_for(caller, Scope::TasksRead).map_err(protocol_error)?;
        let target = Target::parse(uri).ok_or_else(|| not_found(uri))?;
        let status = query_api::reads::status(&backend.queries, tenant, target.task())
            .await
            .map_err(|_| not_found(uri))?;
        let stop = CancellationToken::new();
        let previous = self.lock().insert(uri.to_owned(), stop.clone());
        if let Some(previous) = previous {
            previous.cancel();
        }
        tokio::spawn(notify_updates(
            backend.queries.clone(),
            tenant,
            target.task(),
            status.last_seq,
            uri.to_owned(),
            peer,
            stop,
        ));
        Ok(())
    }

    /// Stops the notifications for `uri` (a no-op when there were none).
    pub fn unsubscribe(&self, uri: &str) {
        if let Some(stop) = self.lock().remove(uri) {
            stop.cancel();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, CancellationToken>> {
        self.active.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Subscriptions {
    fn drop(&mut self) {
        for stop in self.lock().values() {
            stop.cancel();
        }
    }
}

/// One notification per batch of new events, until the task ends, the client
/// unsubscribes or the session goes away.
async fn notify_updates(
    queries: query_api::State,
    tenant: TenantId,
    task: TaskId,
    from: u64,
    uri: String,
    peer: Peer<RoleServer>,
    stop: CancellationToken,
) {
    let mut follower = queries.follow(tenant, task, from);
    loop {
        let event = tokio::select! {
            event = follower.next_event() => event,
            () = stop.cancelled() => return,
        };
        let Some(event) = event else { return };
        let updated = ResourceUpdatedNotificationParam::new(uri.clone());
        if peer.notify_resource_updated(updated).await.is_err() || event.event.kind.is_terminal() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_name_a_task_and_a_view() {
        let task = TaskId::new();
        assert_eq!(
            Target::parse(&format!("axontask://tasks/{task}")),
            Some(Target::Status(task))
        );
        assert_eq!(
            Target::parse(&format!("axontask://tasks/{task}/events")),
            Some(Target::Events(task))
        );
        assert_eq!(Target::parse("axontask://tasks/nope"), None);
        assert_eq!(Target::parse(&format!("file:///{task}")), None);
    }
}
