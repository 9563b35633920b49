//! OpenEnv's messages and what a session does with them; no sockets here
//! (`server` moves the text).
//!
//! A session's client sends JSON text frames `{"type": T, "data": D}`:
//! `reset` (D optional: `seed`, `episode_id`), `step` (D: the contract's
//! action as JSON, e.g. `{"Discrete": 1}`, or OpenEnv's
//! `{"type": "call_tool", "tool_name", "arguments"}` / `{"type":
//! "list_tools"}`), `state`, `close`, and `mcp` (D: a JSON-RPC request,
//! `tools/list` or `tools/call`). Each gets exactly one reply (none for
//! `close`), in order: `observation`, `state`, `mcp` or `error` (`data`:
//! `message` and `code`: `INVALID_JSON`, `UNKNOWN_TYPE`,
//! `VALIDATION_ERROR`, `EXECUTION_ERROR`).

use std::sync::Arc;

use ludus_arena::driven::{DrivenEnv, DrivenError, Recording};
use ludus_arena::model::{Action, EnvInfo, Observation, Value as Part};
use ludus_arena::plugin::Plugin;
use serde_json::{Value, json};

/// What the server needs to open sessions: the plugin, its config and
/// description, the recording (with `--db`) and where seeds come from.
pub struct Served {
    pub plugin: Arc<Plugin>,
    pub config: String,
    pub info: EnvInfo,
    pub tools: Vec<ludus_arena::model::Tool>,
    pub recording: Option<Arc<Recording>>,
    /// Seeds for resets that name none: `derived_seed(seed, n)`.
    pub seed: u64,
    pub resets: std::sync::atomic::AtomicU64,
}

impl Served {
    fn next_seed(&self) -> u64 {
        let n = self
            .resets
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        ludus_core::derived_seed(self.seed, n)
    }
}

/// What the server does after a message.
#[derive(Debug, PartialEq)]
pub enum Reply {
    Send(String),
    /// The client asked to close: no reply, close the socket.
    Close,
}

/// The error frame OpenEnv clients read.
pub fn error(code: &str, message: &str) -> String {
    json!({"type": "error", "data": {"message": message, "code": code}}).to_string()
}

/// One client's session: its own env instance (a fresh one per episode).
pub struct Session {
    served: Arc<Served>,
    env: DrivenEnv,
    episode_id: Option<String>,
    seed: Option<u64>,
    steps: u64,
    done: bool,
}

impl Session {
    pub fn new(served: Arc<Served>) -> Session {
        let env = DrivenEnv::new(
            served.plugin.clone(),
            &served.config,
            served.info.clone(),
            served.recording.clone(),
        );
        Session {
            served,
            env,
            episode_id: None,
            seed: None,
            steps: 0,
            done: false,
        }
    }

    /// Answers one `/ws` text frame.
    pub fn handle(&mut self, text: &str) -> Reply {
        let v: Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(e) => return Reply::Send(error("INVALID_JSON", &format!("Invalid JSON: {e}"))),
        };
        let Some(obj) = v.as_object() else {
            return Reply::Send(error("VALIDATION_ERROR", "a message is a JSON object"));
        };
        let Some(kind) = obj.get("type").and_then(Value::as_str) else {
            return Reply::Send(error("VALIDATION_ERROR", "a message needs a string `type`"));
        };
        if let Some(extra) = obj.keys().find(|k| *k != "type" && *k != "data") {
            return Reply::Send(error(
                "VALIDATION_ERROR",
                &format!("unexpected key `{extra}` (a message has `type` and `data`)"),
            ));
        }
        let data = obj.get("data");
        match kind {
            "reset" => Reply::Send(self.reset(data)),
            "step" => Reply::Send(self.step(data)),
            "state" => Reply::Send(json!({"type": "state", "data": self.state()}).to_string()),
            "close" => Reply::Close,
            "mcp" => match data {
                Some(rpc) => Reply::Send(json!({"type": "mcp", "data": self.mcp(rpc)}).to_string()),
                None => Reply::Send(error("VALIDATION_ERROR", "`mcp` needs `data`")),
            },
            other => Reply::Send(error(
                "UNKNOWN_TYPE",
                &format!("Unknown message type: {other}"),
            )),
        }
    }

    /// Answers one raw JSON-RPC frame (the `/mcp` WebSocket).
    pub fn handle_rpc(&mut self, text: &str) -> String {
        match serde_json::from_str::<Value>(text) {
            Ok(v) => self.mcp(&v).to_string(),
            Err(e) => rpc_error(&Value::Null, -32700, &format!("Parse error: {e}")).to_string(),
        }
    }

    fn state(&self) -> Value {
        json!({
            "episode_id": self.episode_id,
            "step_count": self.steps,
            "seed": self.seed,
            "done": self.done,
            "env": self.served.info.name,
        })
    }

    fn reset(&mut self, data: Option<&Value>) -> String {
        let data = match data {
            None | Some(Value::Null) => serde_json::Map::new(),
            Some(Value::Object(o)) => o.clone(),
            Some(_) => return error("VALIDATION_ERROR", "reset's `data` is an object"),
        };
        let seed = match data.get("seed") {
            None | Some(Value::Null) => self.served.next_seed(),
            Some(s) => match s.as_u64() {
                Some(s) => s,
                None => {
                    return error("VALIDATION_ERROR", "`seed` is an integer from 0 to 2^64-1");
                }
            },
        };
        let episode_id = match data.get("episode_id") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.len() <= 255 => Some(s.clone()),
            Some(_) => {
                return error(
                    "VALIDATION_ERROR",
                    "`episode_id` is a string of at most 255 characters",
                );
            }
        };
        match self.env.reset(seed) {
            Ok(r) => {
                self.episode_id = episode_id;
                self.seed = Some(seed);
                self.steps = 0;
                self.done = false;
                let meta = json!({"task": r.task, "info": info_json(&r.info), "seed": seed});
                observation_message(&r.observation, None, false, meta)
            }
            Err(c) => error(
                "EXECUTION_ERROR",
                &format!("the env plugin crashed in reset: {}", c.message),
            ),
        }
    }

    fn step(&mut self, data: Option<&Value>) -> String {
        let Some(Value::Object(data)) = data else {
            return error("VALIDATION_ERROR", "step needs `data`: the action");
        };
        let mut data = data.clone();
        data.remove("metadata");
        match data.get("type").and_then(Value::as_str) {
            Some("list_tools") => {
                let meta = json!({});
                let mut obs = serde_json::Map::new();
                obs.insert("tools".into(), tools_json(&self.served.tools));
                obs.insert("metadata".into(), meta);
                return json!({"type": "observation", "data": {
                    "observation": obs, "reward": null, "done": self.done,
                }})
                .to_string();
            }
            Some("call_tool") => {
                let (Some(name), arguments) = (
                    data.get("tool_name").and_then(Value::as_str),
                    data.get("arguments").cloned().unwrap_or_else(|| json!({})),
                ) else {
                    return error("VALIDATION_ERROR", "call_tool needs `tool_name`");
                };
                if !self.served.tools.iter().any(|t| t.name == name) {
                    return error(
                        "VALIDATION_ERROR",
                        &format!("Unknown tool: '{name}' (list_tools lists them)"),
                    );
                }
                let action = tool_call_action(name, arguments, self.steps);
                return match self.act(action) {
                    Ok((observation, reward, done, meta)) => {
                        let mut v: Value = serde_json::from_str(&observation_message(
                            &observation,
                            Some(reward),
                            done,
                            meta,
                        ))
                        .unwrap_or_default();
                        v["data"]["observation"]["tool_name"] = json!(name);
                        v.to_string()
                    }
                    Err(e) => e,
                };
            }
            _ => {}
        }
        let action: Action = match serde_json::from_value(Value::Object(data)) {
            Ok(a) => a,
            Err(e) => {
                return error(
                    "VALIDATION_ERROR",
                    &format!(
                        "not an action of the contract ({e}): send e.g. {{\"Discrete\": 1}}, \
                         {{\"Continuous\": [0.5]}} or {{\"TypeText\": \"...\"}}"
                    ),
                );
            }
        };
        if let Err(why) = action_fits(&action, &self.served.info.action_space) {
            return error("VALIDATION_ERROR", &why);
        }
        match self.act(action) {
            Ok((observation, reward, done, meta)) => {
                observation_message(&observation, Some(reward), done, meta)
            }
            Err(e) => e,
        }
    }

    /// Steps the env; the observation, reward, `done` and metadata, or an
    /// error frame.
    fn act(&mut self, action: Action) -> Result<(Observation, f32, bool, Value), String> {
        match self.env.step(action) {
            Ok(s) => {
                self.steps += 1;
                self.done = s.terminated || s.truncated;
                let meta = json!({
                    "terminated": s.terminated,
                    "truncated": s.truncated,
                    "info": info_json(&s.info),
                    "step": self.steps,
                });
                Ok((s.observation, s.reward, self.done, meta))
            }
            Err(DrivenError::Crash(c)) => {
                self.done = true;
                Err(error(
                    "EXECUTION_ERROR",
                    &format!(
                        "the env plugin crashed: {} (the episode is recorded as crashed; reset to go on)",
                        c.message
                    ),
                ))
            }
            Err(e) => Err(error("EXECUTION_ERROR", &e.to_string())),
        }
    }

    /// A JSON-RPC request: `tools/list`, `tools/call`.
    fn mcp(&mut self, rpc: &Value) -> Value {
        let id = rpc.get("id").cloned().unwrap_or(Value::Null);
        let Some(method) = rpc.get("method").and_then(Value::as_str) else {
            return rpc_error(&id, -32600, "Invalid Request: no `method`");
        };
        let params = rpc.get("params").cloned().unwrap_or_else(|| json!({}));
        match method {
            "tools/list" => rpc_result(&id, json!({"tools": tools_json(&self.served.tools)})),
            "tools/call" => {
                let Some(name) = params.get("name").and_then(Value::as_str) else {
                    return rpc_error(&id, -32602, "Invalid params: tools/call needs `name`");
                };
                if !self.served.tools.iter().any(|t| t.name == name) {
                    return rpc_error(&id, -32602, &format!("Unknown tool: '{name}'"));
                }
                if !self.env.in_episode() {
                    return rpc_error(
                        &id,
                        -32603,
                        "no episode in progress: reset before calling a tool",
                    );
                }
                let arguments = params
                    .get("arguments")
                    .cloned()
                    .unwrap_or_else(|| json!({}));
                let action = tool_call_action(name, arguments, self.steps);
                match self.act(action) {
                    Ok((observation, reward, done, meta)) => {
                        let structured = observation_json(&observation);
                        let text = text_of(&observation);
                        rpc_result(
                            &id,
                            json!({
                                "content": [{"type": "text", "text": text}],
                                "structured_content": structured,
                                "is_error": false,
                                "reward": reward,
                                "done": done,
                                "metadata": meta,
                            }),
                        )
                    }
                    Err(frame) => {
                        let message = serde_json::from_str::<Value>(&frame)
                            .ok()
                            .and_then(|v| v["data"]["message"].as_str().map(str::to_string))
                            .unwrap_or(frame);
                        rpc_error(&id, -32603, &message)
                    }
                }
            }
            other => rpc_error(&id, -32601, &format!("Method not found: {other}")),
        }
    }
}

/// Whether the env's action space takes `action` (a client's action is
/// checked before the plugin sees it).
pub fn action_fits(action: &Action, space: &ludus_arena::model::ActionSpace) -> Result<(), String> {
    match action {
        Action::Discrete(i) => match space.discrete {
            Some(n) if *i < n => Ok(()),
            Some(n) => Err(format!("Discrete {i} is outside the env's actions 0..{n}")),
            None => Err("the env takes no discrete actions".into()),
        },
        Action::Continuous(v) => match &space.continuous {
            Some(b) => {
                let n: u32 = b.shape.iter().product();
                if v.len() == n as usize {
                    Ok(())
                } else {
                    Err(format!("Continuous needs {n} values, not {}", v.len()))
                }
            }
            None => Err("the env takes no continuous actions".into()),
        },
        Action::TypeText(t) => match space.text {
            Some(max) if t.len() <= max as usize => Ok(()),
            Some(max) => Err(format!("TypeText is at most {max} bytes, not {}", t.len())),
            None => Err("the env takes no text actions".into()),
        },
        Action::Key(k) => match &space.keys {
            Some(keys) if keys.contains(&k.key) => Ok(()),
            Some(_) => Err(format!("the env takes no key `{}`", k.key)),
            None => Err("the env takes no key presses".into()),
        },
        Action::Pointer(_) if space.pointer.is_none() => {
            Err("the env takes no pointer actions".into())
        }
        Action::Element(_) if !space.element => Err("the env takes no element actions".into()),
        _ => Ok(()),
    }
}

fn rpc_result(id: &Value, result: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

fn rpc_error(id: &Value, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

/// The contract's tool-call action (`type-text` holding `{"tool_call":
/// ...}`, as the SDKs write it).
fn tool_call_action(name: &str, arguments: Value, step: u64) -> Action {
    let body =
        json!({"tool_call": {"id": format!("call_{step}"), "name": name, "arguments": arguments}});
    Action::TypeText(body.to_string())
}

/// The tools as MCP lists them (`input_schema`, and `inputSchema` for
/// clients that read MCP's own spelling).
pub fn tools_json(tools: &[ludus_arena::model::Tool]) -> Value {
    Value::from(
        tools
            .iter()
            .map(|t| {
                let schema: Value = serde_json::from_str(&t.parameters)
                    .unwrap_or_else(|_| json!({"type": "object"}));
                json!({
                    "name": t.name,
                    "description": t.description,
                    "input_schema": schema,
                    "inputSchema": schema,
                })
            })
            .collect::<Vec<_>>(),
    )
}

/// An env's info text as JSON (text that is not JSON as a string).
fn info_json(info: &str) -> Value {
    if info.is_empty() {
        return json!({});
    }
    serde_json::from_str(info).unwrap_or_else(|_| json!(info))
}

/// An observation as JSON: each part by name, images as PNG `data:` URLs.
pub fn observation_json(o: &Observation) -> Value {
    ludus_arena::export::observation_json_with(o, |_, i| match ludus_llm::png_data_url(i) {
        Ok(url) => {
            json!({"width": i.width, "height": i.height, "channels": i.channels, "url": url})
        }
        Err(e) => json!({"error": e}),
    })
}

/// An observation's text parts (what a tool call's MCP content shows).
fn text_of(o: &Observation) -> String {
    let texts: Vec<&str> = o
        .iter()
        .filter_map(|p| match &p.value {
            Part::Text(t) => Some(t.as_str()),
            _ => None,
        })
        .collect();
    if texts.is_empty() {
        observation_json(o).to_string()
    } else {
        texts.join("\n")
    }
}

/// The `observation` reply: the parts and `metadata` inside `observation`,
/// `reward` and `done` beside it, `metadata` copied to the top (OpenEnv
/// 0.10's shape, which earlier clients read too).
fn observation_message(o: &Observation, reward: Option<f32>, done: bool, meta: Value) -> String {
    let mut obs = match observation_json(o) {
        Value::Object(m) => m,
        _ => serde_json::Map::new(),
    };
    obs.insert("metadata".into(), meta.clone());
    json!({"type": "observation", "data": {
        "observation": obs,
        "reward": reward.map(f64::from),
        "done": done,
        "metadata": meta,
    }})
    .to_string()
}

/// `GET /schema`: JSON schemas of the action, the observation and the
/// state.
pub fn schema(info: &EnvInfo) -> Value {
    let a = &info.action_space;
    let mut kinds = Vec::new();
    let one = |key: &str, v: Value| json!({"type": "object", "properties": {key: v}, "required": [key], "additionalProperties": false});
    if let Some(n) = a.discrete {
        kinds.push(one(
            "Discrete",
            json!({"type": "integer", "minimum": 0, "maximum": n.saturating_sub(1)}),
        ));
    }
    if let Some(b) = &a.continuous {
        let n: u32 = b.shape.iter().product();
        kinds.push(one(
            "Continuous",
            json!({"type": "array", "items": {"type": "number"}, "minItems": n, "maxItems": n}),
        ));
    }
    if let Some(max) = a.text {
        kinds.push(one("TypeText", json!({"type": "string", "maxLength": max})));
    }
    if let Some(keys) = &a.keys {
        kinds.push(one(
            "Key",
            json!({"type": "object", "properties": {"key": {"enum": keys}, "ctrl": {"type": "boolean"}, "alt": {"type": "boolean"}, "shift": {"type": "boolean"}}, "required": ["key"]}),
        ));
    }
    if let Some((w, h)) = a.pointer {
        kinds.push(one(
            "Pointer",
            json!({"type": "object", "properties": {
                "kind": {"enum": ["Move", "Click", "DoubleClick", "Drag", "Scroll"]},
                "button": {"enum": ["Left", "Middle", "Right"]},
                "x": {"type": "integer", "minimum": 0, "maximum": w.saturating_sub(1)},
                "y": {"type": "integer", "minimum": 0, "maximum": h.saturating_sub(1)},
                "to_x": {"type": "integer"}, "to_y": {"type": "integer"},
                "dx": {"type": "integer"}, "dy": {"type": "integer"}}}),
        ));
    }
    if a.element {
        kinds.push(one("Element", json!({"type": "integer", "minimum": 0})));
    }
    let mut parts = serde_json::Map::new();
    for p in &info.observation_space {
        parts.insert(p.name.clone(), part_schema(&p.space));
    }
    parts.insert("metadata".into(), json!({"type": "object"}));
    json!({
        "action": {"title": format!("{}Action", info.name), "oneOf": kinds},
        "observation": {"title": format!("{}Observation", info.name), "type": "object", "properties": parts},
        "state": {"title": "State", "type": "object", "properties": {
            "episode_id": {"type": ["string", "null"]},
            "step_count": {"type": "integer", "minimum": 0},
            "seed": {"type": ["integer", "null"]},
            "done": {"type": "boolean"},
            "env": {"type": "string"}}},
    })
}

fn part_schema(space: &ludus_arena::model::PartSpace) -> Value {
    use ludus_arena::model::PartSpace as Space;
    match space {
        Space::Discrete(n) => {
            json!({"type": "integer", "minimum": 0, "maximum": n.saturating_sub(1)})
        }
        Space::Box(b) => {
            let n: u32 = b.shape.iter().product();
            json!({"type": "array", "items": {"type": "number"}, "minItems": n, "maxItems": n})
        }
        Space::Image(_) => json!({"type": "object", "properties": {
            "width": {"type": "integer"}, "height": {"type": "integer"},
            "channels": {"type": "integer"}, "url": {"type": "string"}}}),
        Space::Text(max) => json!({"type": "string", "maxLength": max}),
        Space::Tree => json!({"type": "object"}),
    }
}
