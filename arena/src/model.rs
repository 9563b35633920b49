//! The contract's data types (generated from `plugins/wit`), plus what the
//! arena records for every frame.

use serde::{Deserialize, Serialize};

pub use crate::contract::ludus::plugin::log::Level;
pub use crate::contract::ludus::plugin::model::{
    ChatRequest, ChatResponse, ContentPart, Message, ModelError, Tool, ToolCall,
};
pub use crate::contract::ludus::plugin::types::*;

/// A generated token: its id where the server gave one, its text and
/// log-probability.
pub type GeneratedToken = crate::contract::ludus::plugin::model::Token;

/// Which plugin wrote a log line or spent time in a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    Env,
    Agent,
    Reward,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Env => "env",
            Role::Agent => "agent",
            Role::Reward => "reward",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LogLine {
    pub role: Role,
    pub level: Level,
    pub message: String,
}

/// One write to execution memory: `value: None` deletes the path.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MemoryWrite {
    pub path: String,
    pub value: Option<String>,
}

/// One step of an episode: the observation the agent saw, the action it took,
/// and what followed. Everything here is deterministic given the seed and the
/// plugins; wall-clock durations live apart, in [`Timing`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Frame {
    pub step: u32,
    pub observation: Observation,
    pub action: Action,
    /// The environment's own reward.
    pub env_reward: f32,
    /// The recorded reward: the reward plugin's when the run has one, else the env's.
    pub reward: f32,
    pub terminated: bool,
    pub truncated: bool,
    /// The environment's info, JSON text.
    pub info: String,
    /// The reward plugin's success flag for this step, if it gave one.
    pub success: Option<bool>,
    /// The reward plugin's note, if any.
    pub note: Option<String>,
    pub logs: Vec<LogLine>,
    pub memory_writes: Vec<MemoryWrite>,
    /// The model calls made while playing the frame (by the agent, then
    /// the reward plugin), in order. Recorded beside the frame's bytes
    /// (their own table), not in them: see [`crate::codec`].
    #[serde(skip_deserializing, default, skip_serializing_if = "Vec::is_empty")]
    pub model_calls: Vec<ModelCall>,
}

/// Wall-clock time spent in each plugin call of a frame, in nanoseconds.
/// Not part of the episode digest.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Timing {
    pub act_ns: u64,
    pub step_ns: u64,
    pub score_ns: u64,
}

/// Where a recorded call's answer came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Served {
    /// A live endpoint.
    Live,
    /// A recording (a replayed prefix, or `--model-from-recording`): no
    /// request was sent.
    Recording,
    /// The user's edit (`ludus fork --model-response`).
    Edited,
    /// Nobody: the host refused it (budget, unknown endpoint).
    Refused,
}

/// One model call as recorded with its frame. The digest of an episode
/// covers `role`, `request` and `result` (see [`crate::codec::call_digest_bytes`]);
/// latency, cost, retries and where the answer came from vary between plays
/// of the same episode and are kept beside it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelCall {
    pub role: Role,
    pub request: ChatRequest,
    pub result: Result<ChatResponse, ModelError>,
    pub latency_ms: f64,
    pub cost_usd: f64,
    pub attempts: Vec<String>,
    pub served: Served,
}

impl ModelCall {
    pub fn tokens_in(&self) -> u64 {
        self.result
            .as_ref()
            .map_or(0, |r| u64::from(r.prompt_tokens))
    }

    pub fn tokens_out(&self) -> u64 {
        self.result
            .as_ref()
            .map_or(0, |r| u64::from(r.completion_tokens))
    }

    /// A one-line name for the error, for reports (`budget-exceeded`, ...).
    pub fn error_kind(&self) -> Option<&'static str> {
        self.result.as_ref().err().map(error_kind)
    }
}

/// The kebab-case name of a model error's case.
pub fn error_kind(e: &ModelError) -> &'static str {
    match e {
        ModelError::BudgetExceeded(_) => "budget-exceeded",
        ModelError::UnknownEndpoint(_) => "unknown-endpoint",
        ModelError::Unavailable(_) => "unavailable",
        ModelError::BadRequest(_) => "bad-request",
        ModelError::Timeout(_) => "timeout",
    }
}

/// The explanation a model error carries.
pub fn error_message(e: &ModelError) -> &str {
    match e {
        ModelError::BudgetExceeded(m)
        | ModelError::UnknownEndpoint(m)
        | ModelError::Unavailable(m)
        | ModelError::BadRequest(m)
        | ModelError::Timeout(m) => m,
    }
}

/// Totals of an episode's model calls, for reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelTotals {
    /// Calls made (answered or not), refused ones included.
    pub model_calls: u64,
    pub tokens_in: u64,
    pub tokens_out: u64,
    pub cost_usd: f64,
    /// Wall-clock time spent waiting on live endpoints.
    pub model_ms: f64,
    /// Calls refused by a budget.
    pub budget_refusals: u64,
    /// Calls whose answer came from a live endpoint.
    pub live_calls: u64,
}

impl ModelTotals {
    pub fn add(&mut self, call: &ModelCall) {
        self.model_calls += 1;
        self.tokens_in += call.tokens_in();
        self.tokens_out += call.tokens_out();
        self.cost_usd += call.cost_usd;
        self.model_ms += call.latency_ms;
        if matches!(call.result, Err(ModelError::BudgetExceeded(_))) {
            self.budget_refusals += 1;
        }
        if call.served == Served::Live {
            self.live_calls += 1;
        }
    }

    /// Adds another episode's totals (a run's).
    pub fn merge(&mut self, other: &ModelTotals) {
        self.model_calls += other.model_calls;
        self.tokens_in += other.tokens_in;
        self.tokens_out += other.tokens_out;
        self.cost_usd += other.cost_usd;
        self.model_ms += other.model_ms;
        self.budget_refusals += other.budget_refusals;
        self.live_calls += other.live_calls;
    }
}

/// A message's text parts joined, images as `[image]`.
pub fn message_text(m: &Message) -> String {
    let mut s = String::new();
    for p in &m.content {
        match p {
            ContentPart::Text(t) => s.push_str(t),
            ContentPart::Image(i) => s.push_str(&format!("[image {}x{}]", i.width, i.height)),
            ContentPart::ObservationImage(n) => s.push_str(&format!("[observation image {n}]")),
        }
    }
    for c in &m.tool_calls {
        s.push_str(&format!("[tool call {} {}]", c.name, c.arguments));
    }
    s
}

/// The image part named `name` of an observation.
pub fn observation_image<'a>(observation: &'a Observation, name: &str) -> Option<&'a Image> {
    observation.iter().find_map(|p| match &p.value {
        Value::Image(i) if p.name == name => Some(i),
        _ => None,
    })
}
