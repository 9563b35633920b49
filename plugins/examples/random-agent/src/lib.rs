//! Acts uniformly at random in whatever action space the environment declares.
//! Its randomness comes from the seed the host passes at each episode start, so
//! episodes are reproducible.

use ludus_sdk::*;

pub struct RandomAgent {
    rng: Rng,
    space: Option<ActionSpace>,
}

impl Agent for RandomAgent {
    fn init(_config: &str) -> Result<(Self, AgentInfo), String> {
        let info = AgentInfo {
            name: "random".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Uniformly random actions.".into(),
        };
        Ok((
            RandomAgent {
                rng: Rng::new(0),
                space: None,
            },
            info,
        ))
    }

    fn begin_episode(&mut self, env: &EnvInfo, _task: &str, seed: u64) {
        self.rng = Rng::new(seed);
        self.space = Some(env.action_space.clone());
    }

    fn act(&mut self, _observation: &Observation, _context: &StepContext) -> Action {
        let Some(space) = &self.space else {
            return Action::Noop;
        };
        if let Some(n) = space.discrete {
            return Action::Discrete(self.rng.below(n.max(1)));
        }
        if let Some(b) = &space.continuous {
            let v = b
                .low
                .iter()
                .zip(&b.high)
                .map(|(l, h)| {
                    self.rng
                        .uniform(f64::from(l.max(-1e3)), f64::from(h.min(1e3)))
                        as f32
                })
                .collect();
            return Action::Continuous(v);
        }
        if let Some((w, h)) = space.pointer {
            return Action::Pointer(PointerAction {
                kind: PointerKind::Click,
                button: MouseButton::Left,
                x: self.rng.below(w.max(1)) as i32,
                y: self.rng.below(h.max(1)) as i32,
                to_x: 0,
                to_y: 0,
                dx: 0,
                dy: 0,
            });
        }
        Action::Noop
    }
}

export_agent!(RandomAgent);
