//! Calls to language models through the host (contract 0.1.3).
//!
//! [`chat`] sends a request to the endpoint the run was given under the
//! request's name (`ludus run --model [NAME=]URL`; `default` unless you name
//! another, e.g. `judge`). The host records every call with the frame it is
//! made in, counts it against the episode's budgets, and on a replay (a
//! fork's prefix, a re-run) answers it from the recording without
//! contacting any server. Errors are values to handle: over budget, no such
//! endpoint, server unavailable (after retries), bad request, timeout.

use crate::bindings::ludus::plugin::model as host;
pub use crate::bindings::ludus::plugin::model::{
    ChatRequest, ChatResponse, ContentPart, Message, ModelError, Token, Tool, ToolCall,
};

/// Sends `request` and waits for the answer.
pub fn chat(request: &ChatRequest) -> Result<ChatResponse, ModelError> {
    host::chat(request)
}

/// The tools the episode's environment offers (empty for most): give them
/// to a model in [`ChatRequest::tools`], and act with the call it makes
/// through [`crate::tools::tool_call_action`].
pub fn env_tools() -> Vec<Tool> {
    host::env_tools()
}

impl ChatRequest {
    /// A request to the `default` endpoint with these messages and
    /// nothing else set (the server's defaults apply).
    pub fn new(messages: Vec<Message>) -> ChatRequest {
        ChatRequest {
            endpoint: "default".into(),
            messages,
            tools: Vec::new(),
            response_format: None,
            temperature: None,
            top_p: None,
            max_tokens: None,
            stop: Vec::new(),
            seed: None,
            logprobs: false,
        }
    }
}

impl Message {
    /// A message of one text part.
    pub fn text(role: &str, text: impl Into<String>) -> Message {
        Message {
            role: role.into(),
            content: vec![ContentPart::Text(text.into())],
            tool_calls: Vec::new(),
            tool_call_id: None,
        }
    }
    pub fn system(text: impl Into<String>) -> Message {
        Message::text("system", text)
    }
    pub fn user(text: impl Into<String>) -> Message {
        Message::text("user", text)
    }
    pub fn assistant(text: impl Into<String>) -> Message {
        Message::text("assistant", text)
    }
}

impl ModelError {
    /// The one-line explanation the host gave.
    pub fn message(&self) -> &str {
        match self {
            ModelError::BudgetExceeded(m)
            | ModelError::UnknownEndpoint(m)
            | ModelError::Unavailable(m)
            | ModelError::BadRequest(m)
            | ModelError::Timeout(m) => m,
        }
    }
}
