//! The MCP server handler: capabilities, the tool list, tool dispatch, resources and the
//! tasks extension. One handler serves one session (or one stateless request); all it
//! knows of tasks comes from the stores, through [`Backend`].

use std::sync::Arc;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CancelTaskParams, ErrorData as McpError,
    GetTaskParams, GetTaskResult, Implementation, ListResourceTemplatesResult, ListResourcesResult,
    ListToolsResult, PaginatedRequestParams, ReadResourceRequestParams, ReadResourceResponse,
    ServerCapabilities, ServerConfig, SubscribeRequestParams, Tool, UnsubscribeRequestParams,
    UpdateTaskParams,
};
use rmcp::service::RequestContext;
use rmcp::task_manager::TaskManager;
use rmcp::{RoleServer, ServerHandler};

use crate::calls::Invocation;
use crate::resources::{self, Subscriptions};
use crate::{Backend, auth, calls, fixtures, tasks, tools};

/// What the server tells clients at `initialize` and `server/discover`.
const INSTRUCTIONS: &str = "AxonTask runs durable background tasks. start_task (or run_task) \
starts one and returns its task_id; stream_task returns its events and waits for more; \
after a disconnect, resume_task picks up from the last seq you saw; cancel_task stops it.";

/// The handler of one MCP session or stateless request.
#[derive(Clone)]
pub struct AxonServer {
    backend: Backend,
    subscriptions: Arc<Subscriptions>,
}

impl AxonServer {
    /// A handler over the shared backend.
    pub fn new(backend: Backend) -> Self {
        Self {
            backend,
            subscriptions: Arc::default(),
        }
    }

    fn fixtures(&self) -> bool {
        self.backend.settings.fixtures
    }

    /// The fixture task manager, when fixtures are on and it knows `task_id`.
    fn fixture_task(&self, task_id: &str) -> Option<&TaskManager> {
        let manager = &self.backend.fixture_tasks;
        (self.fixtures() && manager.get_task(task_id).is_ok()).then_some(&**manager)
    }
}

impl ServerHandler for AxonServer {
    fn get_info(&self) -> ServerConfig {
        let mut capabilities = ServerCapabilities::builder()
            .enable_tools()
            .enable_resources()
            .enable_resources_subscribe()
            .enable_tasks()
            .build();
        if self.fixtures() {
            fixtures::extend_capabilities(&mut capabilities);
        }
        ServerConfig::new(capabilities)
            .with_server_info(Implementation::new("axontask", env!("CARGO_PKG_VERSION")))
            .with_instructions(INSTRUCTIONS)
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        let mut all = tools::list().to_vec();
        if self.fixtures() {
            all.extend(fixtures::tools());
        }
        Ok(ListToolsResult::with_all_items(all))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        let ours = tools::list().iter().find(|tool| tool.name == name).cloned();
        ours.or_else(|| {
            self.fixtures()
                .then(fixtures::tools)?
                .into_iter()
                .find(|tool| tool.name == name)
        })
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let caller = auth::principal(&context)?.clone();
        let mut call = Invocation::new(&context);
        let name = request.name.as_ref();
        if let Some(response) = calls::dispatch(
            &self.backend,
            &caller,
            name,
            request.arguments.clone(),
            &mut call,
        )
        .await
        {
            return Ok(response);
        }
        if self.fixtures() && fixtures::is_tool(name) {
            return fixtures::call(&self.backend, request, context).await;
        }
        Err(McpError::invalid_params(
            format!("unknown tool '{name}'; tools/list names this server's tools"),
            None,
        ))
    }

    #[allow(deprecated)] // Logging is deprecated by SEP-2577; only the fixtures log.
    async fn set_level(
        &self,
        _request: rmcp::model::SetLevelRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        if self.fixtures() {
            Ok(())
        } else {
            Err(McpError::method_not_found::<
                rmcp::model::SetLevelRequestMethod,
            >())
        }
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, McpError> {
        let mut listed = resources::list(&self.backend, auth::principal(&context)?).await?;
        if self.fixtures() {
            listed.resources.extend(fixtures::resources());
        }
        Ok(listed)
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, McpError> {
        let mut listed = resources::templates();
        if self.fixtures() {
            listed.resource_templates.extend(fixtures::templates());
        }
        Ok(listed)
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, McpError> {
        let caller = auth::principal(&context)?;
        if self.fixtures() && !resources::is_task_uri(&request.uri) {
            return fixtures::read(&request.uri).map(Into::into);
        }
        resources::read(&self.backend, caller, &request.uri)
            .await
            .map(Into::into)
    }

    async fn subscribe(
        &self,
        request: SubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        if self.fixtures() && !resources::is_task_uri(&request.uri) {
            return Ok(());
        }
        let caller = auth::principal(&context)?;
        self.subscriptions
            .subscribe(&self.backend, caller, &request.uri, context.peer.clone())
            .await
    }

    async fn unsubscribe(
        &self,
        request: UnsubscribeRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        self.subscriptions.unsubscribe(&request.uri);
        Ok(())
    }

    async fn get_task(
        &self,
        request: GetTaskParams,
        context: RequestContext<RoleServer>,
    ) -> Result<GetTaskResult, McpError> {
        if let Some(fixture) = self.fixture_task(&request.task_id) {
            return fixture.get_task(&request.task_id).map(GetTaskResult::new);
        }
        tasks::get(&self.backend, auth::principal(&context)?, &request.task_id).await
    }

    async fn update_task(
        &self,
        request: UpdateTaskParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        if let Some(fixture) = self.fixture_task(&request.task_id) {
            return fixture.update_task(&request.task_id, request.input_responses);
        }
        // AxonTask tasks never ask for input: an update is acknowledged, once the task is
        // known to be the caller's.
        tasks::get(&self.backend, auth::principal(&context)?, &request.task_id)
            .await
            .map(|_| ())
    }

    async fn cancel_task(
        &self,
        request: CancelTaskParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        if let Some(fixture) = self.fixture_task(&request.task_id) {
            return fixture.cancel_task(&request.task_id);
        }
        tasks::cancel(&self.backend, auth::principal(&context)?, &request.task_id).await
    }
}
