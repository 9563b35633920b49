//! What the debugger shows of one frame, and how a frame looks to CEL
//! expressions and in JSON.
//!
//! Variables an expression sees:
//! - `step` (int), `reward`, `env_reward` (double), `terminated`, `truncated`,
//!   `done` (bool), `success` (bool or null), `note` (string or null);
//! - `info`: the env's info JSON as a map (a string when it is not JSON);
//! - `action`: a map with `kind` (`discrete`, `continuous`, `move`, `click`,
//!   `double-click`, `drag`, `scroll`, `type`, `key`, `element`, `noop`) and
//!   the kind's fields (`value`, `values`, `x`, `y`, `to_x`, `to_y`, `dx`, `dy`,
//!   `button`, `text`, `key`, `ctrl`, `alt`, `shift`);
//! - `observation`: a map from part name to its value (vector: list of
//!   doubles; discrete: int; text: string; image: `{width, height, channels}`;
//!   tree: a list of `{id, parent, role, name, value, x, y, width, height,
//!   focused, checked, disabled}`);
//! - `logs`: a list of `{role, level, message}`; `log`: their messages, one per line;
//! - `memory`: the execution memory after this frame's writes, path to value
//!   (paths the episode writes at some point are present, null while unset);
//!   `changed`: the paths this frame wrote or deleted;
//! - `timing`: `{act_ns, step_ns, score_ns}`;
//! - `outcome` (the episode's: `terminated`, `truncated`, `crashed`,
//!   `interrupted`, `running`), `episode`: `{id, outcome, length, return, success, seed}`;
//! - `prev`: the previous frame's variables; at frame 0 only `prev.step`
//!   (-1) and `prev.memory` (the memory the episode started with).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use cel::Value;
use ludus_arena::model::{Action, Frame, Level, LogLine, PointerKind, Timing, Value as PartValue};

/// One frame as the debugger shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct FrameView {
    pub index: u64,
    pub frame: Frame,
    pub timing: Timing,
    /// The memory after this frame's writes.
    pub memory: BTreeMap<String, String>,
    /// The memory before them: what the agent read when it started acting.
    pub memory_before: BTreeMap<String, String>,
}

impl FrameView {
    /// The paths this frame wrote or deleted, in order, without repeats.
    pub fn changed_paths(&self) -> Vec<&str> {
        let mut seen = BTreeSet::new();
        self.frame
            .memory_writes
            .iter()
            .map(|w| w.path.as_str())
            .filter(|p| seen.insert(*p))
            .collect()
    }
}

/// Facts about the episode that every frame's expressions can read.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct EpisodeMeta {
    pub id: i64,
    pub outcome: String,
    pub length: u64,
    #[serde(rename = "return")]
    pub return_: f64,
    pub success: bool,
    pub seed: u64,
}

impl EpisodeMeta {
    pub(crate) fn to_cel(&self) -> Value {
        let mut m: HashMap<String, Value> = HashMap::new();
        m.insert("id".into(), Value::Int(self.id));
        m.insert("outcome".into(), self.outcome.as_str().into());
        m.insert("length".into(), Value::Int(self.length as i64));
        m.insert("return".into(), Value::Float(self.return_));
        m.insert("success".into(), Value::Bool(self.success));
        m.insert("seed".into(), Value::UInt(self.seed));
        m.into()
    }
}

/// A short label for an action: `discrete(1)`, `click(10,20)`, `type("hi")`.
pub fn action_label(action: &Action) -> String {
    match action {
        Action::Discrete(n) => format!("discrete({n})"),
        Action::Continuous(v) => format!("continuous({v:?})"),
        Action::Pointer(p) => match p.kind {
            PointerKind::Drag => format!("drag({},{} -> {},{})", p.x, p.y, p.to_x, p.to_y),
            PointerKind::Scroll => format!("scroll({},{} by {},{})", p.x, p.y, p.dx, p.dy),
            k => format!("{}({},{})", pointer_kind(k), p.x, p.y),
        },
        Action::TypeText(t) => format!("type({t:?})"),
        Action::Key(k) => {
            let mut s = String::new();
            for (on, name) in [(k.ctrl, "ctrl+"), (k.alt, "alt+"), (k.shift, "shift+")] {
                if on {
                    s.push_str(name);
                }
            }
            format!("key({s}{})", k.key)
        }
        Action::Element(id) => format!("element({id})"),
        Action::Noop => "noop".into(),
    }
}

pub(crate) fn pointer_kind(k: PointerKind) -> &'static str {
    match k {
        PointerKind::Move => "move",
        PointerKind::Click => "click",
        PointerKind::DoubleClick => "double-click",
        PointerKind::Drag => "drag",
        PointerKind::Scroll => "scroll",
    }
}

fn level(l: Level) -> &'static str {
    match l {
        Level::Trace => "trace",
        Level::Debug => "debug",
        Level::Info => "info",
        Level::Warn => "warn",
        Level::Error => "error",
    }
}

fn action_cel(action: &Action) -> Value {
    let mut m: HashMap<String, Value> = HashMap::new();
    let kind: &str = match action {
        Action::Discrete(n) => {
            m.insert("value".into(), Value::Int(i64::from(*n)));
            "discrete"
        }
        Action::Continuous(v) => {
            m.insert(
                "values".into(),
                v.iter()
                    .map(|x| Value::Float(f64::from(*x)))
                    .collect::<Vec<_>>()
                    .into(),
            );
            "continuous"
        }
        Action::Pointer(p) => {
            for (k, v) in [
                ("x", p.x),
                ("y", p.y),
                ("to_x", p.to_x),
                ("to_y", p.to_y),
                ("dx", p.dx),
                ("dy", p.dy),
            ] {
                m.insert(k.into(), Value::Int(i64::from(v)));
            }
            m.insert(
                "button".into(),
                format!("{:?}", p.button).to_lowercase().into(),
            );
            pointer_kind(p.kind)
        }
        Action::TypeText(t) => {
            m.insert("text".into(), t.as_str().into());
            "type"
        }
        Action::Key(k) => {
            m.insert("key".into(), k.key.as_str().into());
            m.insert("ctrl".into(), Value::Bool(k.ctrl));
            m.insert("alt".into(), Value::Bool(k.alt));
            m.insert("shift".into(), Value::Bool(k.shift));
            "key"
        }
        Action::Element(id) => {
            m.insert("value".into(), Value::Int(i64::from(*id)));
            "element"
        }
        Action::Noop => "noop",
    };
    m.insert("kind".into(), kind.into());
    m.into()
}

fn part_cel(v: &PartValue) -> Value {
    match v {
        PartValue::Discrete(n) => Value::Int(i64::from(*n)),
        PartValue::Vector(v) => v
            .iter()
            .map(|x| Value::Float(f64::from(*x)))
            .collect::<Vec<_>>()
            .into(),
        PartValue::Text(t) => t.as_str().into(),
        PartValue::Image(img) => {
            let mut m: HashMap<String, Value> = HashMap::new();
            m.insert("width".into(), Value::Int(i64::from(img.width)));
            m.insert("height".into(), Value::Int(i64::from(img.height)));
            m.insert("channels".into(), Value::Int(i64::from(img.channels)));
            m.into()
        }
        PartValue::Tree(nodes) => nodes
            .iter()
            .map(|n| {
                let mut m: HashMap<String, Value> = HashMap::new();
                m.insert("id".into(), Value::Int(i64::from(n.id)));
                m.insert(
                    "parent".into(),
                    n.parent.map_or(Value::Null, |p| Value::Int(i64::from(p))),
                );
                m.insert("role".into(), n.role.as_str().into());
                m.insert("name".into(), n.name.as_str().into());
                m.insert("value".into(), n.value.as_str().into());
                m.insert("x".into(), Value::Int(i64::from(n.bounds.x)));
                m.insert("y".into(), Value::Int(i64::from(n.bounds.y)));
                m.insert("width".into(), Value::Int(i64::from(n.bounds.width)));
                m.insert("height".into(), Value::Int(i64::from(n.bounds.height)));
                m.insert("focused".into(), Value::Bool(n.focused));
                m.insert("checked".into(), n.checked.map_or(Value::Null, Value::Bool));
                m.insert("disabled".into(), Value::Bool(n.disabled));
                Value::from(m)
            })
            .collect::<Vec<_>>()
            .into(),
    }
}

fn logs_cel(logs: &[LogLine]) -> (Value, Value) {
    let list: Vec<Value> = logs
        .iter()
        .map(|l| {
            let mut m: HashMap<String, Value> = HashMap::new();
            m.insert("role".into(), l.role.as_str().into());
            m.insert("level".into(), level(l.level).into());
            m.insert("message".into(), l.message.as_str().into());
            Value::from(m)
        })
        .collect();
    let text: Vec<&str> = logs.iter().map(|l| l.message.as_str()).collect();
    (list.into(), text.join("\n").into())
}

/// JSON (from the env's info) as a CEL value.
pub fn json_to_cel(v: &serde_json::Value) -> Value {
    match v {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => Value::Int(i),
            None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        serde_json::Value::String(s) => s.as_str().into(),
        serde_json::Value::Array(a) => a.iter().map(json_to_cel).collect::<Vec<_>>().into(),
        serde_json::Value::Object(o) => {
            let m: HashMap<String, Value> =
                o.iter().map(|(k, v)| (k.clone(), json_to_cel(v))).collect();
            m.into()
        }
    }
}

/// A CEL value as JSON (for watch values).
pub fn cel_to_json(v: &Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        Value::Null => J::Null,
        Value::Bool(b) => J::Bool(*b),
        Value::Int(i) => J::from(*i),
        Value::UInt(u) => J::from(*u),
        Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
        Value::String(s) => J::String(s.to_string()),
        Value::Bytes(b) => J::from(b.as_slice()),
        Value::List(l) => J::Array(l.iter().map(cel_to_json).collect()),
        Value::Map(m) => J::Object(
            m.map
                .iter()
                .map(|(k, v)| (key_string(k), cel_to_json(v)))
                .collect(),
        ),
        other => J::String(format!("{other:?}")),
    }
}

fn key_string(k: &cel::objects::Key) -> String {
    match k {
        cel::objects::Key::String(s) => s.to_string(),
        other => format!("{other:?}"),
    }
}

/// The memory as a CEL map: every path in `known` is present (null while
/// unset), so `memory[p] != prev.memory[p]` works across the first write.
pub(crate) fn memory_cel(memory: &BTreeMap<String, String>, known: &[String]) -> Value {
    let mut m: HashMap<String, Value> = HashMap::with_capacity(memory.len() + known.len());
    for k in known {
        m.insert(k.clone(), Value::Null);
    }
    for (k, v) in memory {
        m.insert(k.clone(), v.as_str().into());
    }
    m.into()
}

/// The plain (cheap, always-present) variables of a frame, by bit in `Uses::plain`.
pub(crate) const PLAIN: [&str; 11] = [
    "step",
    "reward",
    "env_reward",
    "terminated",
    "truncated",
    "done",
    "success",
    "note",
    "info",
    "action",
    "timing",
];

/// A frame's variables, building only what `uses` asks for: a scan over a
/// million frames must not parse every frame's info for `reward < 0`.
pub(crate) fn frame_vars(
    frame: &Frame,
    timing: &Timing,
    memory: Option<Value>,
    uses: Uses,
) -> Vec<(&'static str, Value)> {
    let mut v: Vec<(&'static str, Value)> = Vec::with_capacity(16);
    let wants = |name: usize| uses.plain & (1 << name) != 0;
    for (i, name) in PLAIN.iter().enumerate() {
        if !wants(i) {
            continue;
        }
        let value = match *name {
            "step" => Value::Int(i64::from(frame.step)),
            "reward" => Value::Float(f64::from(frame.reward)),
            "env_reward" => Value::Float(f64::from(frame.env_reward)),
            "terminated" => Value::Bool(frame.terminated),
            "truncated" => Value::Bool(frame.truncated),
            "done" => Value::Bool(frame.terminated || frame.truncated),
            "success" => frame.success.map_or(Value::Null, Value::Bool),
            "note" => frame.note.as_deref().map_or(Value::Null, Value::from),
            "info" => match serde_json::from_str::<serde_json::Value>(&frame.info) {
                Ok(j) => json_to_cel(&j),
                Err(_) => frame.info.as_str().into(),
            },
            "action" => action_cel(&frame.action),
            _ => {
                let mut t: HashMap<String, Value> = HashMap::new();
                t.insert("act_ns".into(), Value::UInt(timing.act_ns));
                t.insert("step_ns".into(), Value::UInt(timing.step_ns));
                t.insert("score_ns".into(), Value::UInt(timing.score_ns));
                t.into()
            }
        };
        v.push((name, value));
    }
    if uses.observation {
        let m: HashMap<String, Value> = frame
            .observation
            .iter()
            .map(|p| (p.name.clone(), part_cel(&p.value)))
            .collect();
        v.push(("observation", m.into()));
    }
    if uses.logs {
        let (list, text) = logs_cel(&frame.logs);
        v.push(("logs", list));
        v.push(("log", text));
    }
    if uses.model {
        v.push(("model", model_cel(&frame.model_calls)));
    }
    if let Some(m) = memory {
        v.push(("memory", m));
        let changed: Vec<Value> = frame
            .memory_writes
            .iter()
            .map(|w| Value::from(w.path.as_str()))
            .collect();
        v.push(("changed", changed.into()));
    }
    v
}

/// A frame's model calls as CEL: `model.calls` (each with `role`,
/// `endpoint`, `request`, `response`, `error`, `tokens_in`, `tokens_out`,
/// `latency_ms`, `cost`, `served`) and the frame's totals `model.count`,
/// `model.tokens_in`, `model.tokens_out`, `model.cost`, `model.latency_ms`.
pub(crate) fn model_cel(calls: &[ludus_arena::chat::ModelCall]) -> Value {
    let mut list = Vec::with_capacity(calls.len());
    let (mut tin, mut tout, mut cost, mut ms) = (0u64, 0u64, 0.0f64, 0.0f64);
    for c in calls {
        tin += c.tokens_in();
        tout += c.tokens_out();
        cost += c.cost_usd;
        ms += c.latency_ms;
        let j = model_call_json(c);
        list.push(json_to_cel(&j));
    }
    let mut m: HashMap<String, Value> = HashMap::new();
    m.insert("calls".into(), list.into());
    m.insert("count".into(), Value::Int(calls.len() as i64));
    m.insert("tokens_in".into(), Value::Int(tin as i64));
    m.insert("tokens_out".into(), Value::Int(tout as i64));
    m.insert("cost".into(), Value::Float(cost));
    m.insert("latency_ms".into(), Value::Float(ms));
    m.into()
}

/// A model call as JSON, for CEL, `ludus debug --json` and diffs: the
/// request's messages as role and text, images summarised.
pub fn model_call_json(c: &ludus_arena::chat::ModelCall) -> serde_json::Value {
    use ludus_arena::chat::{error_kind, error_message, message_text};
    use serde_json::json;
    let r = &c.request;
    let messages: Vec<serde_json::Value> = r
        .messages
        .iter()
        .map(|m| json!({"role": m.role, "content": message_text(m)}))
        .collect();
    let request = json!({
        "endpoint": r.endpoint,
        "messages": messages,
        "tools": r.tools.iter().map(|t| t.name.clone()).collect::<Vec<_>>(),
        "response_format": r.response_format,
        "temperature": r.temperature,
        "max_tokens": r.max_tokens,
        "seed": r.seed,
    });
    let (response, error) = match &c.result {
        Ok(a) => (
            json!({
                "content": a.content,
                "tool_calls": a.tool_calls.iter().map(|t| json!({"id": t.id, "name": t.name, "arguments": t.arguments})).collect::<Vec<_>>(),
                "finish_reason": a.finish_reason,
                "model": a.model,
            }),
            serde_json::Value::Null,
        ),
        Err(e) => (
            serde_json::Value::Null,
            json!({"kind": error_kind(e), "message": error_message(e)}),
        ),
    };
    json!({
        "role": c.role.as_str(),
        "endpoint": r.endpoint,
        "request": request,
        "response": response,
        "error": error,
        "tokens_in": c.tokens_in(),
        "tokens_out": c.tokens_out(),
        "latency_ms": c.latency_ms,
        "cost": c.cost_usd,
        "served": format!("{:?}", c.served).to_lowercase(),
    })
}

/// `prev` at frame 0: the starting memory, and step -1.
pub(crate) fn start_vars(memory: Option<Value>) -> Value {
    let mut m: HashMap<String, Value> = HashMap::new();
    m.insert("step".into(), Value::Int(-1));
    if let Some(mem) = memory {
        m.insert("memory".into(), mem);
    }
    m.into()
}

pub(crate) fn vars_to_map(vars: Vec<(&'static str, Value)>) -> Value {
    let m: HashMap<String, Value> = vars.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    m.into()
}

/// A frame as JSON for printing: images are summarised, not dumped.
pub fn frame_json(view: &FrameView) -> serde_json::Value {
    use serde_json::json;
    let f = &view.frame;
    let parts: serde_json::Map<String, serde_json::Value> = f
        .observation
        .iter()
        .map(|p| {
            let v = match &p.value {
                PartValue::Image(img) => json!({
                    "image": {"width": img.width, "height": img.height, "channels": img.channels,
                              "bytes": img.pixels.len()}
                }),
                other => serde_json::to_value(other).unwrap_or(serde_json::Value::Null),
            };
            (p.name.clone(), v)
        })
        .collect();
    let info = serde_json::from_str::<serde_json::Value>(&f.info)
        .unwrap_or_else(|_| serde_json::Value::String(f.info.clone()));
    let mut out = json!({
        "frame": view.index,
        "step": f.step,
        "observation": parts,
        "action": action_label(&f.action),
        "reward": f.reward,
        "env_reward": f.env_reward,
        "terminated": f.terminated,
        "truncated": f.truncated,
        "success": f.success,
        "note": f.note,
        "info": info,
        "logs": f.logs.iter().map(|l| json!({"role": l.role.as_str(), "level": level(l.level), "message": l.message})).collect::<Vec<_>>(),
        "memory_writes": f.memory_writes,
        "memory": view.memory,
        "timing": view.timing,
    });
    if !f.model_calls.is_empty() {
        out["model_calls"] = f.model_calls.iter().map(model_call_json).collect();
    }
    out
}

/// Parses an action written on a command line or in a UI: `discrete:1`,
/// `continuous:0.5,-1`, `click:10,20` (also `double-click`, `move`, with an
/// optional `@right` or `@middle` button), `drag:10,20,30,40`,
/// `scroll:10,20,0,-3`, `type:hello`, `key:ctrl+shift+Tab`, `element:7`,
/// `noop`, or the action as JSON.
pub fn parse_action(spec: &str) -> Result<Action, String> {
    use ludus_arena::model::{KeyPress, MouseButton, PointerAction};
    let spec = spec.trim();
    if spec.starts_with('{') || spec.starts_with('"') {
        return serde_json::from_str(spec).map_err(|e| format!("action `{spec}`: bad JSON: {e}"));
    }
    if spec == "noop" {
        return Ok(Action::Noop);
    }
    let Some((kind, rest)) = spec.split_once(':') else {
        return Err(format!(
            "action `{spec}`: expected KIND:ARGS (discrete:1, click:10,20, type:hi, key:Enter, noop, ...)"
        ));
    };
    let ints = |s: &str, n: usize| -> Result<Vec<i32>, String> {
        let v: Result<Vec<i32>, _> = s.split(',').map(|x| x.trim().parse::<i32>()).collect();
        match v {
            Ok(v) if v.len() == n => Ok(v),
            _ => Err(format!(
                "action `{spec}`: expected {n} whole numbers separated by commas"
            )),
        }
    };
    let pointer = |pk: PointerKind, rest: &str, n: usize| -> Result<Action, String> {
        let (coords, button) = match rest.split_once('@') {
            Some((c, b)) => (c, b),
            None => (rest, "left"),
        };
        let button = match button {
            "left" => MouseButton::Left,
            "right" => MouseButton::Right,
            "middle" => MouseButton::Middle,
            b => {
                return Err(format!(
                    "action `{spec}`: unknown button `{b}` (left, middle, right)"
                ));
            }
        };
        let v = ints(coords, n)?;
        let mut p = PointerAction {
            kind: pk,
            button,
            x: v[0],
            y: v[1],
            to_x: 0,
            to_y: 0,
            dx: 0,
            dy: 0,
        };
        match pk {
            PointerKind::Drag => (p.to_x, p.to_y) = (v[2], v[3]),
            PointerKind::Scroll => (p.dx, p.dy) = (v[2], v[3]),
            _ => {}
        }
        Ok(Action::Pointer(p))
    };
    match kind {
        "discrete" => rest
            .trim()
            .parse()
            .map(Action::Discrete)
            .map_err(|_| format!("action `{spec}`: `{rest}` is not a whole number")),
        "element" => rest
            .trim()
            .parse()
            .map(Action::Element)
            .map_err(|_| format!("action `{spec}`: `{rest}` is not an element id")),
        "continuous" => rest
            .split(',')
            .map(|x| x.trim().parse::<f32>())
            .collect::<Result<Vec<f32>, _>>()
            .map(Action::Continuous)
            .map_err(|_| format!("action `{spec}`: expected numbers separated by commas")),
        "click" => pointer(PointerKind::Click, rest, 2),
        "double-click" => pointer(PointerKind::DoubleClick, rest, 2),
        "move" => pointer(PointerKind::Move, rest, 2),
        "drag" => pointer(PointerKind::Drag, rest, 4),
        "scroll" => pointer(PointerKind::Scroll, rest, 4),
        "type" => Ok(Action::TypeText(rest.to_string())),
        "key" => {
            let mut k = KeyPress {
                key: String::new(),
                ctrl: false,
                alt: false,
                shift: false,
            };
            let parts: Vec<&str> = rest.split('+').collect();
            for (i, p) in parts.iter().enumerate() {
                match (*p, i + 1 == parts.len()) {
                    (key, true) => k.key = key.to_string(),
                    ("ctrl", false) => k.ctrl = true,
                    ("alt", false) => k.alt = true,
                    ("shift", false) => k.shift = true,
                    (m, false) => return Err(format!("action `{spec}`: unknown modifier `{m}`")),
                }
            }
            if k.key.is_empty() {
                return Err(format!("action `{spec}`: no key named"));
            }
            Ok(Action::Key(k))
        }
        k => Err(format!(
            "action `{spec}`: unknown kind `{k}` (discrete, continuous, click, double-click, move, drag, scroll, type, key, element, noop)"
        )),
    }
}

/// The parts of a frame an expression reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Uses {
    /// Bit i: the plain variable `view::PLAIN[i]` is read.
    pub plain: u32,
    pub memory: bool,
    pub prev: bool,
    pub observation: bool,
    pub logs: bool,
    /// `model`: the frame's model calls and their totals.
    pub model: bool,
}

impl Uses {
    /// The parts of recorded frames these variables are built from.
    pub fn fields(self) -> ludus_arena::codec::FrameFields {
        let info = PLAIN.iter().position(|n| *n == "info");
        ludus_arena::codec::FrameFields {
            observation: self.observation,
            info: info.is_some_and(|i| self.plain & (1 << i) != 0),
            logs: self.logs,
            memory_writes: self.memory,
            model_calls: self.model,
        }
    }

    pub fn union(self, o: Uses) -> Uses {
        Uses {
            plain: self.plain | o.plain,
            memory: self.memory || o.memory,
            prev: self.prev || o.prev,
            observation: self.observation || o.observation,
            logs: self.logs || o.logs,
            model: self.model || o.model,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_parse_and_label_round_trip() {
        for (spec, label) in [
            ("discrete:3", "discrete(3)"),
            ("click:10,20", "click(10,20)"),
            ("drag:1,2,3,4", "drag(1,2 -> 3,4)"),
            ("key:ctrl+Enter", "key(ctrl+Enter)"),
            ("type:hi there", "type(\"hi there\")"),
            ("noop", "noop"),
        ] {
            assert_eq!(action_label(&parse_action(spec).unwrap()), label);
        }
        assert!(
            parse_action("click:1")
                .unwrap_err()
                .contains("2 whole numbers")
        );
        assert!(parse_action("fly:1").unwrap_err().contains("unknown kind"));
        let json = serde_json::to_string(&Action::Discrete(2)).unwrap();
        assert_eq!(parse_action(&json).unwrap(), Action::Discrete(2));
    }
}
