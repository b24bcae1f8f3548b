//! The fixture tools and resources the MCP conformance suite calls, served only when
//! `MCP_CONFORMANCE_FIXTURES` is on (tests). They exercise the protocol paths (content
//! types, logging, progress, sampling) that AxonTask's own tools do not.

#![allow(deprecated)] // Logging and sampling are deprecated by SEP-2577 but still tested.

use std::sync::Arc;
use std::time::Duration;

use rmcp::RoleServer;
use rmcp::model::{
    CallToolResponse, CallToolResult, ContentBlock, CreateMessageRequestParams,
    ErrorData as McpError, JsonObject, LoggingLevel, LoggingMessageNotificationParam,
    ProgressNotificationParam, ReadResourceResult, Resource, ResourceContents, ResourceTemplate,
    Role, SamplingMessage, SamplingMessageContentBlock, ServerCapabilities, Tool,
};
use rmcp::service::RequestContext;
use serde_json::{Value, json};

/// A 1×1 red PNG.
const PNG: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==";
/// An empty 8 kHz mono WAV.
const WAV: &str = "UklGRiQAAABXQVZFZm10IBAAAAABAAEAQB8AAEAfAAABAAgAZGF0YQAAAAA=";
const PAUSE: Duration = Duration::from_millis(50);

const NAMES: [&str; 9] = [
    "test_simple_text",
    "test_image_content",
    "test_audio_content",
    "test_embedded_resource",
    "test_multiple_content_types",
    "test_tool_with_logging",
    "test_error_handling",
    "test_tool_with_progress",
    "test_sampling",
];

/// Adds what the fixtures need: logging.
pub fn extend_capabilities(capabilities: &mut ServerCapabilities) {
    capabilities.logging = Some(JsonObject::new());
}

/// Whether `name` is a fixture tool.
pub fn is_tool(name: &str) -> bool {
    NAMES.contains(&name)
}

/// The fixture tools.
pub fn tools() -> Vec<Tool> {
    NAMES
        .iter()
        .map(|name| {
            let schema = if *name == "test_sampling" {
                json!({"type": "object", "properties": {"prompt": {"type": "string"}}, "required": ["prompt"]})
            } else {
                json!({"type": "object", "properties": {}})
            };
            let Value::Object(schema) = schema else {
                unreachable!("a literal object")
            };
            Tool::new(*name, format!("Conformance fixture {name}"), Arc::new(schema))
        })
        .collect()
}

/// Calls a fixture tool.
pub async fn call(
    name: &str,
    args: Option<JsonObject>,
    context: RequestContext<RoleServer>,
) -> Result<CallToolResponse, McpError> {
    let embedded = |uri: &str, mime: &str, text: &str| {
        ContentBlock::resource(ResourceContents::text(text, uri).with_mime_type(mime))
    };
    let result = match name {
        "test_simple_text" => CallToolResult::success(vec![ContentBlock::text(
            "This is a simple text response for testing.",
        )]),
        "test_image_content" => {
            CallToolResult::success(vec![ContentBlock::image(PNG, "image/png")])
        }
        "test_audio_content" => {
            CallToolResult::success(vec![ContentBlock::audio(WAV, "audio/wav")])
        }
        "test_embedded_resource" => CallToolResult::success(vec![embedded(
            "test://embedded-resource",
            "text/plain",
            "This is an embedded resource content.",
        )]),
        "test_multiple_content_types" => CallToolResult::success(vec![
            ContentBlock::text("Multiple content types test:"),
            ContentBlock::image(PNG, "image/png"),
            embedded(
                "test://mixed-content-resource",
                "application/json",
                r#"{"test":"data","value":123}"#,
            ),
        ]),
        "test_tool_with_logging" => {
            for (i, message) in [
                "Tool execution started",
                "Tool processing data",
                "Tool execution completed",
            ]
            .into_iter()
            .enumerate()
            {
                if i > 0 {
                    tokio::time::sleep(PAUSE).await;
                }
                let log = LoggingMessageNotificationParam::new(LoggingLevel::Info, json!(message));
                let _ = context.peer.notify_logging_message(log).await;
            }
            CallToolResult::success(vec![ContentBlock::text("Logging test completed")])
        }
        "test_error_handling" => CallToolResult::error(vec![ContentBlock::text(
            "This tool intentionally returns an error for testing",
        )]),
        "test_tool_with_progress" => {
            let token = context.meta.get_progress_token();
            for (i, progress) in [0.0, 50.0, 100.0].into_iter().enumerate() {
                if i > 0 {
                    tokio::time::sleep(PAUSE).await;
                }
                if let Some(token) = token.clone() {
                    let mut param = ProgressNotificationParam::new(token, progress);
                    param.total = Some(100.0);
                    let _ = context.peer.notify_progress(param).await;
                }
            }
            CallToolResult::success(vec![ContentBlock::text("Progress test completed")])
        }
        "test_sampling" => sampling(args, &context).await?,
        other => {
            return Err(McpError::invalid_params(
                format!("unknown tool '{other}'"),
                None,
            ));
        }
    };
    Ok(result.into())
}

async fn sampling(
    args: Option<JsonObject>,
    context: &RequestContext<RoleServer>,
) -> Result<CallToolResult, McpError> {
    let prompt = args
        .as_ref()
        .and_then(|a| a.get("prompt"))
        .and_then(Value::as_str)
        .ok_or_else(|| McpError::invalid_params("prompt (a string) is required", None))?;
    let request = CreateMessageRequestParams::new(
        vec![SamplingMessage::new(
            Role::User,
            SamplingMessageContentBlock::text(prompt),
        )],
        100,
    );
    match context.peer.create_message(request).await {
        Ok(answer) => {
            let text = answer
                .message
                .content
                .first()
                .and_then(|c| c.as_text())
                .map(|t| t.text.clone())
                .unwrap_or_default();
            Ok(CallToolResult::success(vec![ContentBlock::text(format!(
                "LLM response: {text}"
            ))]))
        }
        Err(e) => Ok(CallToolResult::error(vec![ContentBlock::text(format!(
            "sampling failed: {e}"
        ))])),
    }
}

/// The fixture resources.
pub fn resources() -> Vec<Resource> {
    vec![
        Resource::new("test://static-text", "static-text").with_mime_type("text/plain"),
        Resource::new("test://static-binary", "static-binary").with_mime_type("image/png"),
        Resource::new("test://watched-resource", "watched-resource").with_mime_type("text/plain"),
    ]
}

/// The fixture resource template.
pub fn templates() -> Vec<ResourceTemplate> {
    vec![
        ResourceTemplate::new("test://template/{id}/data", "template-data")
            .with_mime_type("application/json"),
    ]
}

/// Reads a fixture resource.
pub fn read(uri: &str) -> Result<ReadResourceResult, McpError> {
    let contents = match uri {
        "test://static-text" => {
            ResourceContents::text("This is the content of the static text resource.", uri)
                .with_mime_type("text/plain")
        }
        "test://static-binary" => ResourceContents::blob(PNG, uri).with_mime_type("image/png"),
        "test://watched-resource" => {
            ResourceContents::text("watched", uri).with_mime_type("text/plain")
        }
        _ => {
            let id = uri
                .strip_prefix("test://template/")
                .and_then(|rest| rest.strip_suffix("/data"))
                .ok_or_else(|| McpError::resource_not_found(format!("no resource {uri}"), None))?;
            let text =
                json!({"id": id, "templateTest": true, "data": format!("Data for ID: {id}")});
            ResourceContents::text(text.to_string(), uri).with_mime_type("application/json")
        }
    };
    Ok(ReadResourceResult::new(vec![contents]))
}
