//! The simplest LLM agent: each step it sends the observation's text parts
//! (joined by newlines) as the user message, with an optional system
//! message, and acts with the model's answer as text (`type-text`). A failed
//! call acts with empty text and logs why.
//!
//! Config (`key=value`, comma separated): `endpoint` (`default`),
//! `temperature` (1.0), `max-tokens` (16), `system` (none).

use ludus_sdk::model::{ChatRequest, Message, chat};
use ludus_sdk::*;

pub struct TextAgent {
    endpoint: String,
    temperature: f32,
    max_tokens: u32,
    system: Option<String>,
}

impl Agent for TextAgent {
    fn init(config: &str) -> Result<(Self, AgentInfo), String> {
        let mut a = TextAgent {
            endpoint: "default".into(),
            temperature: 1.0,
            max_tokens: 16,
            system: None,
        };
        for (key, value) in parse_config(config)? {
            match key.as_str() {
                "endpoint" => a.endpoint = value,
                "temperature" => a.temperature = parse_value(&key, &value)?,
                "max-tokens" => a.max_tokens = parse_value(&key, &value)?,
                "system" => a.system = Some(value),
                other => {
                    return Err(format!(
                        "llm-text-agent: unknown config key `{other}` (known: endpoint, temperature, max-tokens, system)"
                    ));
                }
            }
        }
        let info = AgentInfo {
            name: "llm-text-agent".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Answers the observation's text with a model's text.".into(),
        };
        Ok((a, info))
    }

    fn begin_episode(&mut self, _env: &EnvInfo, _task: &str, _seed: u64) {}

    fn act(&mut self, observation: &Observation, _context: &StepContext) -> Action {
        let text: Vec<&str> = observation
            .iter()
            .filter_map(|p| match &p.value {
                Value::Text(t) => Some(t.as_str()),
                _ => None,
            })
            .collect();
        let mut messages = Vec::new();
        if let Some(s) = &self.system {
            messages.push(Message::system(s.clone()));
        }
        messages.push(Message::user(text.join("\n")));
        let mut request = ChatRequest::new(messages);
        request.endpoint = self.endpoint.clone();
        request.temperature = Some(self.temperature);
        request.max_tokens = Some(self.max_tokens);
        match chat(&request) {
            Ok(answer) => Action::TypeText(answer.content),
            Err(e) => {
                log::warn(&format!("model call failed: {}", e.message()));
                Action::TypeText(String::new())
            }
        }
    }
}

export_agent!(TextAgent);
