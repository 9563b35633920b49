//! The example maze solver, deliberately weakened for the suite tests: with
//! probability `wander` (config, default 0.6) a step is a random move instead
//! of the planned one. It replans after every detour, so it still reaches the
//! goal given time, just later: success drops where the step limit is tight.

use ludus_sdk::*;
use maze_kit::{Grid, key_mask, solve};

pub struct WeakMazeSolver {
    wander: f64,
    rng: Rng,
    plan: Vec<u32>,
    next: usize,
    expected: Option<(usize, usize)>,
}

impl Agent for WeakMazeSolver {
    fn init(config: &str) -> Result<(Self, AgentInfo), String> {
        let mut wander = 0.6;
        for (k, v) in parse_config(config)? {
            match k.as_str() {
                "wander" => wander = parse_value(&k, &v)?,
                _ => {
                    return Err(format!(
                        "weak-maze-solver: unknown config key `{k}` (known: wander)"
                    ));
                }
            }
        }
        if !(0.0..=1.0).contains(&wander) {
            return Err(format!(
                "weak-maze-solver: wander must be within 0..=1 (got {wander})"
            ));
        }
        let info = AgentInfo {
            name: "weak-maze-solver".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: format!("Plans shortest paths but wanders {wander} of the time."),
        };
        Ok((
            WeakMazeSolver {
                wander,
                rng: Rng::new(0),
                plan: Vec::new(),
                next: 0,
                expected: None,
            },
            info,
        ))
    }

    fn begin_episode(&mut self, _env: &EnvInfo, _task: &str, seed: u64) {
        self.rng = Rng::new(seed);
        self.plan.clear();
        self.next = 0;
        self.expected = None;
    }

    fn act(&mut self, observation: &Observation, _context: &StepContext) -> Action {
        let Some(grid) = text_part(observation, "grid").and_then(Grid::parse) else {
            log::error("no `grid` part in the observation: is this the maze?");
            return Action::Noop;
        };
        if self.rng.next_f64() < self.wander {
            // A detour: the plan no longer matches, so the next step replans.
            self.expected = None;
            return Action::Discrete(self.rng.below(4));
        }
        if self.expected != Some(grid.agent) || self.next >= self.plan.len() {
            let keys = key_mask(text_part(observation, "keys").unwrap_or(""));
            match solve(&grid, keys, |_, _| true) {
                Some(plan) => {
                    self.plan = plan;
                    self.next = 0;
                }
                None => return Action::Discrete(0),
            }
        }
        let Some(&a) = self.plan.get(self.next) else {
            return Action::Noop;
        };
        self.next += 1;
        self.expected = grid.neighbour(grid.agent, a as usize);
        Action::Discrete(a)
    }
}

export_agent!(WeakMazeSolver);
