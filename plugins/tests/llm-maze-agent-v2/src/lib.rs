//! `llm-maze-agent`, its prompt changed from step 3 on. The agent's source
//! is compiled in (a dependency on its crate would rebuild that crate's own
//! .wasm without its export).

#[path = "../../../examples/llm-maze-agent/src/lib.rs"]
mod inner;

use inner::LlmMazeAgent;
use ludus_sdk::*;

struct V2(LlmMazeAgent);

impl Agent for V2 {
    fn init(config: &str) -> Result<(Self, AgentInfo), String> {
        let (mut a, info) = LlmMazeAgent::init(config)?;
        a.hint = Some((3, "Hint: walls never move.".into()));
        Ok((V2(a), info))
    }
    fn begin_episode(&mut self, env: &EnvInfo, task: &str, seed: u64) {
        self.0.begin_episode(env, task, seed)
    }
    fn act(&mut self, observation: &Observation, context: &StepContext) -> Action {
        self.0.act(observation, context)
    }
    fn end_episode(&mut self, end: &EpisodeEnd) {
        self.0.end_episode(end)
    }
}

export_agent!(V2);
