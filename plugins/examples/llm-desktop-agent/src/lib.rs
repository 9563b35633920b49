//! An LLM agent for the desktop env: each step it shows the model the
//! instruction and the element tree (id, role, name, value, state) and asks
//! for one action in a JSON schema: `{"action": "click"|"type", "element":
//! ID, "text": TEXT}`. A click acts on the element (by id where the env
//! takes element actions, else a pointer click at its centre); a type first
//! needs the field focused. With `vision=1` the request also carries the
//! screenshot (the observation's `screen` part, sent by the host: the agent
//! copies no pixels). An unusable answer becomes a no-op, counted in
//! `/episode/fallbacks`.
//!
//! Config: `vision` (0), `endpoint` (`default`), `max-tokens` (48),
//! `schema` (`on`).

use ludus_sdk::model::{ChatRequest, ContentPart, Message, chat};
use ludus_sdk::*;

pub struct LlmDesktopAgent {
    vision: bool,
    endpoint: String,
    max_tokens: u32,
    schema: bool,
    element_actions: bool,
    task: String,
    fallbacks: u32,
}

fn tree_text(elements: &[Element]) -> String {
    let mut s = String::new();
    for e in elements.iter().take(80) {
        s.push_str(&format!("#{} {} {:?}", e.id, e.role, e.name));
        if !e.value.is_empty() {
            s.push_str(&format!(" value={:?}", e.value));
        }
        if e.focused {
            s.push_str(" focused");
        }
        if let Some(c) = e.checked {
            s.push_str(if c { " checked" } else { " unchecked" });
        }
        if e.disabled {
            s.push_str(" disabled");
        }
        s.push('\n');
    }
    s
}

impl LlmDesktopAgent {
    fn decide(&self, observation: &Observation) -> Option<Action> {
        let elements = match part(observation, "tree") {
            Some(Value::Tree(t)) => t.clone(),
            _ => Vec::new(),
        };
        let instruction = text_part(observation, "instruction").unwrap_or(&self.task);
        let mut content = vec![ContentPart::Text(format!(
            "Instruction: {instruction}\nElements:\n{}\nWhich element do you act on?",
            tree_text(&elements)
        ))];
        if self.vision {
            content.push(ContentPart::ObservationImage("screen".into()));
        }
        let user = Message {
            role: "user".into(),
            content,
            tool_calls: Vec::new(),
            tool_call_id: None,
        };
        let mut r = ChatRequest::new(vec![
            Message::system(
                "You operate a desktop by acting on its elements. Answer with JSON: \
                 {\"action\": \"click\" or \"type\", \"element\": id, \"text\": what to type}.",
            ),
            user,
        ]);
        r.endpoint = self.endpoint.clone();
        r.temperature = Some(0.0);
        r.max_tokens = Some(self.max_tokens);
        if self.schema {
            r.response_format = Some(
                r#"{"type":"object","properties":{"action":{"type":"string","enum":["click","type"]},"element":{"type":"integer"},"text":{"type":"string"}},"required":["action","element"]}"#.into(),
            );
        }
        let answer = match chat(&r) {
            Ok(a) => a,
            Err(e) => {
                log::warn(&format!("model call failed: {}", e.message()));
                return None;
            }
        };
        let v: serde_json::Value = serde_json::from_str(answer.content.trim()).ok()?;
        let id = u32::try_from(v.get("element")?.as_u64()?).ok()?;
        let element = elements.iter().find(|e| e.id == id)?;
        match v.get("action")?.as_str()? {
            "type" if element.focused => Some(Action::TypeText(
                v.get("text")
                    .and_then(|t| t.as_str())
                    .unwrap_or("")
                    .to_string(),
            )),
            _ if self.element_actions => Some(Action::Element(id)),
            _ => {
                let b = &element.bounds;
                let (x, y) = (b.x + b.width as i32 / 2, b.y + b.height as i32 / 2);
                Some(Action::Pointer(PointerAction {
                    kind: PointerKind::Click,
                    button: MouseButton::Left,
                    x,
                    y,
                    to_x: x,
                    to_y: y,
                    dx: 0,
                    dy: 0,
                }))
            }
        }
    }
}

impl Agent for LlmDesktopAgent {
    fn init(config: &str) -> Result<(Self, AgentInfo), String> {
        let mut a = LlmDesktopAgent {
            vision: false,
            endpoint: "default".into(),
            max_tokens: 48,
            schema: true,
            element_actions: false,
            task: String::new(),
            fallbacks: 0,
        };
        for (k, v) in parse_config(config)? {
            match k.as_str() {
                "vision" => a.vision = v == "1",
                "endpoint" => a.endpoint = v,
                "max-tokens" => a.max_tokens = parse_value(&k, &v)?,
                "schema" => a.schema = v != "off",
                other => {
                    return Err(format!(
                        "unknown config key `{other}` (vision, endpoint, max-tokens, schema)"
                    ));
                }
            }
        }
        let info = AgentInfo {
            name: "llm-desktop-agent".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Asks a (vision-)language model which desktop element to act on.".into(),
        };
        Ok((a, info))
    }

    fn begin_episode(&mut self, env: &EnvInfo, task: &str, _seed: u64) {
        self.element_actions = env.action_space.element;
        self.task = task.to_string();
        self.fallbacks = 0;
    }

    fn act(&mut self, observation: &Observation, _context: &StepContext) -> Action {
        match self.decide(observation) {
            Some(a) => a,
            None => {
                self.fallbacks += 1;
                let _ = memory::write("/episode/fallbacks", &self.fallbacks.to_string());
                Action::Noop
            }
        }
    }
}

export_agent!(LlmDesktopAgent);
