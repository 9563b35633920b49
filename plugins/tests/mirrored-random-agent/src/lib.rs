//! The example random agent with a different tie-break: every discrete move
//! is equally good to it, and where the original picks move `k` this one
//! picks move `n - 1 - k`. Its quality is the same in distribution (CartPole
//! is symmetric), its trajectories are not: the suite tests check that such
//! a change does not trip the statistical gate.

use ludus_sdk::*;

pub struct MirroredRandomAgent {
    rng: Rng,
    discrete: Option<u32>,
}

impl Agent for MirroredRandomAgent {
    fn init(_config: &str) -> Result<(Self, AgentInfo), String> {
        let info = AgentInfo {
            name: "mirrored-random".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Uniformly random discrete actions, mirrored.".into(),
        };
        Ok((
            MirroredRandomAgent {
                rng: Rng::new(0),
                discrete: None,
            },
            info,
        ))
    }

    fn begin_episode(&mut self, env: &EnvInfo, _task: &str, seed: u64) {
        self.rng = Rng::new(seed);
        self.discrete = env.action_space.discrete;
    }

    fn act(&mut self, _observation: &Observation, _context: &StepContext) -> Action {
        match self.discrete {
            Some(n) => {
                let n = n.max(1);
                Action::Discrete(n - 1 - self.rng.below(n))
            }
            None => Action::Noop,
        }
    }
}

export_agent!(MirroredRandomAgent);
