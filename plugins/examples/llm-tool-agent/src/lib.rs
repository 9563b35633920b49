//! An LLM agent for tool-using environments: it offers the model the tools
//! the environment declares, acts with the tool call the model makes, and
//! gives the model each call's result (the observation's `result` part) as
//! a `tool` message. An answer without a tool call is read as one when it
//! is a JSON object with `name` and `arguments` (small models often answer
//! so); otherwise the agent calls the first tool with `{"path": "/"}` and
//! counts a fallback in `/episode/fallbacks`.
//!
//! Config: `endpoint` (default `default`), `temperature` (0), `max-tokens`
//! (96), `history` (messages kept after the task, 12).

use ludus_sdk::model::{ChatRequest, Message, Tool, ToolCall, chat, env_tools};
use ludus_sdk::tools::tool_call_action;
use ludus_sdk::*;

pub struct LlmToolAgent {
    endpoint: String,
    temperature: f32,
    max_tokens: u32,
    history: usize,
    tools: Vec<Tool>,
    task: String,
    messages: Vec<Message>,
    pending: Option<ToolCall>,
    fallbacks: u32,
    calls: u32,
}

impl LlmToolAgent {
    fn request(&self) -> ChatRequest {
        let mut messages = vec![
            Message::system(
                "You solve tasks by calling the tools you are given, one call at a time. \
                 Each tool's result comes back to you.",
            ),
            Message::user(self.task.clone()),
        ];
        let keep = self.messages.len().saturating_sub(self.history);
        messages.extend(self.messages[keep..].iter().cloned());
        let mut r = ChatRequest::new(messages);
        r.endpoint = self.endpoint.clone();
        r.tools = self.tools.clone();
        r.temperature = Some(self.temperature);
        r.max_tokens = Some(self.max_tokens);
        r
    }

    fn next_call(&mut self) -> Option<ToolCall> {
        let answer = match chat(&self.request()) {
            Ok(a) => a,
            Err(e) => {
                log::warn(&format!("model call failed: {}", e.message()));
                return None;
            }
        };
        if let Some(call) = answer.tool_calls.into_iter().next() {
            let mut m = Message::assistant("");
            m.content.clear();
            m.tool_calls = vec![call.clone()];
            self.messages.push(m);
            return Some(call);
        }
        self.messages
            .push(Message::assistant(answer.content.clone()));
        // A call written as JSON text.
        let v: serde_json::Value = serde_json::from_str(answer.content.trim()).ok()?;
        let name = v.get("name")?.as_str()?.to_string();
        if !self.tools.iter().any(|t| t.name == name) {
            return None;
        }
        let arguments = v
            .get("arguments")
            .map(|a| a.to_string())
            .unwrap_or("{}".into());
        Some(ToolCall {
            id: format!("text-{}", self.calls),
            name,
            arguments,
        })
    }
}

impl Agent for LlmToolAgent {
    fn init(config: &str) -> Result<(Self, AgentInfo), String> {
        let mut a = LlmToolAgent {
            endpoint: "default".into(),
            temperature: 0.0,
            max_tokens: 96,
            history: 12,
            tools: Vec::new(),
            task: String::new(),
            messages: Vec::new(),
            pending: None,
            fallbacks: 0,
            calls: 0,
        };
        for (k, v) in parse_config(config)? {
            match k.as_str() {
                "endpoint" => a.endpoint = v,
                "temperature" => a.temperature = parse_value(&k, &v)?,
                "max-tokens" => a.max_tokens = parse_value(&k, &v)?,
                "history" => a.history = parse_value(&k, &v)?,
                other => {
                    return Err(format!(
                        "unknown config key `{other}` (endpoint, temperature, max-tokens, history)"
                    ));
                }
            }
        }
        let info = AgentInfo {
            name: "llm-tool-agent".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Lets a language model call the environment's tools.".into(),
        };
        Ok((a, info))
    }

    fn begin_episode(&mut self, _env: &EnvInfo, task: &str, _seed: u64) {
        self.tools = env_tools();
        self.task = task.to_string();
        self.messages.clear();
        self.pending = None;
        self.fallbacks = 0;
        self.calls = 0;
    }

    fn act(&mut self, observation: &Observation, _context: &StepContext) -> Action {
        if let Some(call) = self.pending.take() {
            let result = text_part(observation, "result").unwrap_or("").to_string();
            let mut m = Message::text("tool", result);
            m.tool_call_id = Some(call.id);
            self.messages.push(m);
        }
        if self.tools.is_empty() {
            log::error(
                "the environment offers no tools: this agent is for tool-using environments",
            );
            return Action::Noop;
        }
        self.calls += 1;
        let call = match self.next_call() {
            Some(c) => c,
            None => {
                self.fallbacks += 1;
                let _ = memory::write("/episode/fallbacks", &self.fallbacks.to_string());
                ToolCall {
                    id: format!("fallback-{}", self.calls),
                    name: self.tools[0].name.clone(),
                    arguments: r#"{"path":"/"}"#.into(),
                }
            }
        };
        self.pending = Some(call.clone());
        tool_call_action(&call)
    }
}

export_agent!(LlmToolAgent);
