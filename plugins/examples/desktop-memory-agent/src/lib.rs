//! A desktop agent with execution memory. It acts like the scripted solver,
//! but keeps a solution sketch per task in `/agent/desktop/<task>/sketch`:
//! for each menu item it had to look for, the menu that held it (e.g.
//! `Export=File`). Menus are shuffled per layout, so without a sketch it opens
//! them one by one; with one it opens the right menu first. A second run of
//! the workflow is therefore shorter than the first.
//!
//! `/episode/mode` says whether it explores or follows a sketch.

use desktop_kit::{Goal, Options, menu_of, next_input};
use ludus_sdk::*;

#[path = "../../desktop-solver/src/convert.rs"]
mod convert;
use convert::{action, parse_options, tree};

pub struct MemoryAgent {
    base: Options,
    goal: Option<Goal>,
    options: Options,
    /// Where the goal's menu item was seen in this episode.
    found: Option<String>,
}

fn sketch_path(goal: &Goal) -> String {
    format!("/agent/desktop/{}/sketch", goal.kind().name())
}

/// The menu noted for `item` in a sketch of `item=menu` lines.
fn menu_for(sketch: &str, item: &str) -> Option<String> {
    sketch
        .lines()
        .filter_map(|l| l.split_once('='))
        .find(|(i, _)| *i == item)
        .map(|(_, m)| m.to_string())
}

impl Agent for MemoryAgent {
    fn init(config: &str) -> Result<(Self, AgentInfo), String> {
        let info = AgentInfo {
            name: "desktop-memory-agent".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Keeps per-task solution sketches in /agent memory; faster on repeats."
                .into(),
        };
        let base = parse_options(config)?;
        Ok((
            MemoryAgent {
                base: base.clone(),
                goal: None,
                options: base,
                found: None,
            },
            info,
        ))
    }

    fn begin_episode(&mut self, _env: &EnvInfo, task: &str, _seed: u64) {
        self.goal = Goal::parse(task);
        self.options = self.base.clone();
        self.found = None;
        let Some(goal) = &self.goal else {
            log::error(&format!(
                "cannot read the instruction `{task}`: is this the desktop env?"
            ));
            return;
        };
        let hint = match goal {
            Goal::Workflow(w) => {
                memory::read(&sketch_path(goal)).and_then(|s| menu_for(&s, &w.item))
            }
            _ => None,
        };
        let mode = if hint.is_some() { "sketch" } else { "explore" };
        let _ = memory::write("/episode/mode", mode);
        self.options.menu_hint = hint;
    }

    fn act(&mut self, observation: &Observation, _context: &StepContext) -> Action {
        let Some(goal) = &self.goal else {
            return Action::Noop;
        };
        let tree = tree(observation);
        if let Goal::Workflow(w) = goal
            && self.found.is_none()
        {
            self.found = menu_of(&tree, &w.item);
        }
        action(next_input(goal, &tree, &self.options))
    }

    fn end_episode(&mut self, end: &EpisodeEnd) {
        let (Some(goal), Some(menu)) = (&self.goal, &self.found) else {
            return;
        };
        let Goal::Workflow(w) = goal else { return };
        if !end.success || self.options.menu_hint.as_ref() == Some(menu) {
            return;
        }
        let line = format!("{}={menu}", w.item);
        match memory::write(&sketch_path(goal), &line) {
            Ok(()) => log::info(&format!("remembered {line}")),
            Err(e) => log::warn(&format!("could not remember {line}: {e}")),
        }
    }
}

export_agent!(MemoryAgent);
