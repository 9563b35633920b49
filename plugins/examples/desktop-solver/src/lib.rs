//! A scripted agent for the desktop env: it reads the instruction and the
//! element tree (never the pixels) and acts with the pointer and the keyboard,
//! or with element ids when `element_actions=1` is set here and in the env.
//! It solves every task (see desktop-kit's tests and tests/desktop.rs).

use convert::{action, parse_options, tree};
use desktop_kit::{Goal, Options, next_input};
use ludus_sdk::*;

mod convert;

pub struct DesktopSolver {
    goal: Option<Goal>,
    options: Options,
}

impl Agent for DesktopSolver {
    fn init(config: &str) -> Result<(Self, AgentInfo), String> {
        let info = AgentInfo {
            name: "desktop-solver".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Solves desktop tasks from the element tree.".into(),
        };
        Ok((
            DesktopSolver {
                goal: None,
                options: parse_options(config)?,
            },
            info,
        ))
    }

    fn begin_episode(&mut self, _env: &EnvInfo, task: &str, _seed: u64) {
        self.goal = Goal::parse(task);
        if self.goal.is_none() {
            log::error(&format!(
                "cannot read the instruction `{task}`: is this the desktop env?"
            ));
        }
    }

    fn act(&mut self, observation: &Observation, _context: &StepContext) -> Action {
        match &self.goal {
            Some(goal) => action(next_input(goal, &tree(observation), &self.options)),
            None => Action::Noop,
        }
    }
}

export_agent!(DesktopSolver);
