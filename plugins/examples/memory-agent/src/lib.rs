//! An agent with execution memory. On a maze it has not seen, it explores
//! depth-first from what it sees around itself; when it reaches the goal it
//! writes the shortest path through the cells it visited to
//! `/agent/maze/<layout>`. The next time it meets that layout it replays the
//! path: a second run of the same seeds is much shorter.
//!
//! It also keeps `/episode/mode` and `/episode/visited` up to date, so its state
//! is visible frame by frame in the debugger.

use std::collections::BTreeSet;

use ludus_sdk::*;
use maze_kit::{Grid, decode_actions, encode_actions, fnv1a, key_bit, key_mask, solve};

#[derive(Default)]
pub struct MemoryAgent {
    layout_key: Option<String>,
    start: Option<Grid>,
    replay: Vec<u32>,
    next: usize,
    visited: BTreeSet<(usize, usize)>,
    stack: Vec<(usize, usize)>,
    tried: BTreeSet<(usize, usize)>,
    keys: u32,
}

impl Agent for MemoryAgent {
    fn init(_config: &str) -> Result<(Self, AgentInfo), String> {
        let info = AgentInfo {
            name: "memory-agent".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Explores, remembers the path in /agent memory, and reuses it.".into(),
        };
        Ok((MemoryAgent::default(), info))
    }

    fn begin_episode(&mut self, _env: &EnvInfo, _task: &str, _seed: u64) {
        *self = MemoryAgent::default();
    }

    fn act(&mut self, observation: &Observation, context: &StepContext) -> Action {
        let Some(grid) = text_part(observation, "grid").and_then(Grid::parse) else {
            log::error("no `grid` part in the observation: is this the maze?");
            return Action::Noop;
        };
        if context.step == 0 {
            self.begin(observation, &grid);
        }
        self.visited.insert(grid.agent);
        let _ = memory::write("/episode/visited", &self.visited.len().to_string());
        if let Some(&a) = self.replay.get(self.next) {
            self.next += 1;
            return Action::Discrete(a);
        }
        self.explore(
            &grid,
            key_mask(text_part(observation, "keys").unwrap_or("")),
        )
    }

    fn end_episode(&mut self, end: &EpisodeEnd) {
        if !end.success || !self.replay.is_empty() {
            return;
        }
        let (Some(key), Some(start)) = (&self.layout_key, &self.start) else {
            return;
        };
        let visited = &self.visited;
        // The goal cell itself is never observed from inside: allow it too.
        if let Some(path) = solve(start, 0, |x, y| {
            visited.contains(&(x, y)) || start.at(x, y) == b'G'
        }) {
            match memory::write(key, &encode_actions(&path)) {
                Ok(()) => log::info(&format!("remembered a {}-step path at {key}", path.len())),
                Err(e) => log::warn(&format!("could not remember the path: {e}")),
            }
        }
    }
}

impl MemoryAgent {
    fn begin(&mut self, observation: &Observation, grid: &Grid) {
        let text = text_part(observation, "grid").unwrap_or("");
        let key = format!("/agent/maze/{:016x}", fnv1a(text.as_bytes()));
        match memory::read(&key).as_deref().and_then(decode_actions) {
            Some(plan) => {
                log::info(&format!("replaying a remembered {}-step path", plan.len()));
                let _ = memory::write("/episode/mode", "replay");
                self.replay = plan;
            }
            None => {
                let _ = memory::write("/episode/mode", "explore");
            }
        }
        self.layout_key = Some(key);
        self.start = Some(grid.clone());
        self.stack.push(grid.agent);
    }

    /// One step of depth-first exploration using only the four neighbours.
    fn explore(&mut self, grid: &Grid, keys: u32) -> Action {
        if keys != self.keys {
            // A new key may open doors we skipped: explore again from here.
            self.keys = keys;
            self.tried.clear();
            self.stack = vec![grid.agent];
        }
        self.tried.insert(grid.agent);
        if self.stack.last() != Some(&grid.agent) {
            self.stack.push(grid.agent);
        }
        for m in 0..4 {
            let Some(q) = grid.neighbour(grid.agent, m) else {
                continue;
            };
            let c = grid.at(q.0, q.1);
            let open = match c {
                b'#' => false,
                b'A'..=b'F' => keys & key_bit(c) != 0,
                _ => true,
            };
            if open && !self.tried.contains(&q) {
                return Action::Discrete(m as u32);
            }
        }
        // Dead end: step back along the stack.
        self.stack.pop();
        if let Some(&back) = self.stack.last()
            && let Some(m) = (0..4).find(|&m| grid.neighbour(grid.agent, m) == Some(back))
        {
            self.stack.pop();
            return Action::Discrete(m as u32);
        }
        // Everything reachable was tried: start over.
        self.tried.clear();
        self.stack = vec![grid.agent];
        Action::Discrete(0)
    }
}

export_agent!(MemoryAgent);
