//! {{name}}: acts uniformly at random among the environment's discrete
//! actions, from the seed the host passes at each episode start, and counts
//! its episodes in the execution memory (`/agent/episodes`).

use ludus_sdk::*;

pub struct RandomAgent {
    rng: Rng,
    actions: u32,
}

impl Agent for RandomAgent {
    fn init(config: &str) -> Result<(Self, AgentInfo), String> {
        if let Some((key, _)) = parse_config(config)?.into_iter().next() {
            return Err(format!("{{name}} takes no config (got key `{key}`)"));
        }
        let info = AgentInfo {
            name: "{{name}}".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Uniformly random discrete actions.".into(),
        };
        Ok((RandomAgent { rng: Rng::new(0), actions: 2 }, info))
    }

    fn begin_episode(&mut self, env: &EnvInfo, _task: &str, seed: u64) {
        self.rng = Rng::new(seed);
        self.actions = env.action_space.discrete.unwrap_or(2).max(1);
    }

    fn act(&mut self, _observation: &Observation, _context: &StepContext) -> Action {
        Action::Discrete(self.rng.below(self.actions))
    }

    fn end_episode(&mut self, end: &EpisodeEnd) {
        let n: u64 = memory::read("/agent/episodes")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let _ = memory::write("/agent/episodes", &(n + 1).to_string());
        log::info(&format!("episode {} lasted {} steps", n + 1, end.steps));
    }
}

export_agent!(RandomAgent);
