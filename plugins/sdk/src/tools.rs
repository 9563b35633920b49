//! Tools an environment offers a model-driven agent (contract 0.1.3).
//!
//! An environment declares its tools ([`crate::Env::tools`]); an agent gets
//! them with `model::env_tools()`, offers them to a model, and acts with the
//! call the model made: [`tool_call_action`] turns it into a `type-text`
//! action holding `{"tool_call": {"id", "name", "arguments"}}`, which the
//! environment reads back with [`parse_tool_call`] and answers in its next
//! observation.

use crate::Action;
pub use crate::bindings::ludus::plugin::model::{Tool, ToolCall};

/// A tool with its JSON-schema parameters (JSON text).
pub fn tool(name: &str, description: &str, parameters: &str) -> Tool {
    Tool {
        name: name.into(),
        description: description.into(),
        parameters: parameters.into(),
    }
}

/// The action that calls `call`: `type-text` holding
/// `{"tool_call": {"id", "name", "arguments"}}`, the arguments as the JSON
/// the model gave (as a JSON string when they are not JSON).
pub fn tool_call_action(call: &ToolCall) -> Action {
    let arguments = serde_json::from_str::<serde_json::Value>(&call.arguments)
        .unwrap_or_else(|_| serde_json::Value::String(call.arguments.clone()));
    let body = serde_json::json!({
        "tool_call": {"id": call.id, "name": call.name, "arguments": arguments}
    });
    Action::TypeText(body.to_string())
}

/// The tool call an action holds, if it holds one, its arguments as JSON text.
pub fn parse_tool_call(action: &Action) -> Option<ToolCall> {
    let Action::TypeText(text) = action else {
        return None;
    };
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    let call = v.get("tool_call")?;
    let arguments = match call.get("arguments") {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => "{}".into(),
    };
    Some(ToolCall {
        id: call
            .get("id")
            .and_then(|x| x.as_str())
            .unwrap_or("")
            .to_string(),
        name: call.get("name")?.as_str()?.to_string(),
        arguments,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_calls_round_trip_through_an_action() {
        let call = ToolCall {
            id: "c\"1".into(),
            name: "grep".into(),
            arguments: r#"{"pattern": "x\"y"}"#.into(),
        };
        let back = parse_tool_call(&tool_call_action(&call)).unwrap();
        assert_eq!(back.id, call.id);
        assert_eq!(back.name, "grep");
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&back.arguments).unwrap(),
            serde_json::json!({"pattern": "x\"y"})
        );
        assert!(parse_tool_call(&Action::TypeText("hello".into())).is_none());
    }
}
