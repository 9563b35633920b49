//! {{name}}: a corridor. The agent starts somewhere left of the goal and walks
//! (action 0 left, 1 right); reaching the goal ends the episode as a success.
//! Observation: one vector part `state` = [position, goal].

use ludus_sdk::*;

const LENGTH: u32 = 8;

pub struct Corridor {
    position: u32,
}

impl Env for Corridor {
    fn init(config: &str) -> Result<(Self, EnvInfo), String> {
        if let Some((key, _)) = parse_config(config)?.into_iter().next() {
            return Err(format!("{{name}} takes no config (got key `{key}`)"));
        }
        let info = EnvInfo {
            name: "{{name}}".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Walk right to the goal.".into(),
            observation_space: vec![NamedSpace {
                name: "state".into(),
                space: PartSpace::Box(BoxSpace {
                    shape: vec![2],
                    low: vec![0.0, 0.0],
                    high: vec![LENGTH as f32, LENGTH as f32],
                }),
            }],
            action_space: ActionSpace {
                discrete: Some(2),
                continuous: None,
                pointer: None,
                text: None,
                keys: None,
                element: false,
            },
            max_steps: 100,
            vector_size: 2,
        };
        Ok((Corridor { position: 0 }, info))
    }

    fn reset(&mut self, seed: u64) -> ResetResult {
        self.position = Rng::new(seed).below(LENGTH / 2);
        ResetResult {
            observation: self.observation(),
            task: "Reach the goal.".into(),
            info: "{}".into(),
        }
    }

    fn step(&mut self, action: &Action) -> StepResult {
        match action {
            Action::Discrete(1) => self.position += 1,
            Action::Discrete(0) => self.position = self.position.saturating_sub(1),
            _ => {}
        }
        let done = self.position >= LENGTH;
        log::debug(&format!("position {}", self.position));
        StepResult {
            observation: self.observation(),
            reward: if done { 1.0 } else { -0.01 },
            terminated: done,
            truncated: false,
            info: success_info(done),
        }
    }
}

impl Corridor {
    fn observation(&self) -> Observation {
        vector_observation("state", vec![self.position as f32, LENGTH as f32])
    }
}

export_env!(Corridor);
