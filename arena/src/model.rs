//! The contract's data types (generated from `plugins/wit`), plus what the
//! arena records for every frame.

use serde::{Deserialize, Serialize};

pub use crate::contract::ludus::plugin::log::Level;
pub use crate::contract::ludus::plugin::types::*;

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
    pub model_calls: Vec<crate::chat::ModelCall>,
}

/// Wall-clock time spent in each plugin call of a frame, in nanoseconds.
/// Not part of the episode digest.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Timing {
    pub act_ns: u64,
    pub step_ns: u64,
    pub score_ns: u64,
}
