//! Solves the maze: breadth-first search over (position, keys held), replanning
//! whenever the world is not where the plan expected.

use ludus_sdk::*;
use maze_kit::{Grid, key_mask, solve};

pub struct MazeSolver {
    plan: Vec<u32>,
    next: usize,
    expected: Option<(usize, usize)>,
}

impl Agent for MazeSolver {
    fn init(_config: &str) -> Result<(Self, AgentInfo), String> {
        let info = AgentInfo {
            name: "maze-solver".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Plans the shortest path through keys and doors.".into(),
        };
        Ok((
            MazeSolver {
                plan: Vec::new(),
                next: 0,
                expected: None,
            },
            info,
        ))
    }

    fn begin_episode(&mut self, _env: &EnvInfo, _task: &str, _seed: u64) {
        self.plan.clear();
        self.next = 0;
        self.expected = None;
    }

    fn act(&mut self, observation: &Observation, _context: &StepContext) -> Action {
        let Some(grid) = text_part(observation, "grid").and_then(Grid::parse) else {
            log::error("no `grid` part in the observation: is this the maze?");
            return Action::Noop;
        };
        if self.expected != Some(grid.agent) || self.next >= self.plan.len() {
            let keys = key_mask(text_part(observation, "keys").unwrap_or(""));
            match solve(&grid, keys, |_, _| true) {
                Some(plan) => {
                    log::debug(&format!("planned {} moves", plan.len()));
                    self.plan = plan;
                    self.next = 0;
                }
                None => {
                    log::warn("no path to the goal");
                    return Action::Discrete(0);
                }
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

export_agent!(MazeSolver);
