//! The simulated desktop behind the `desktop` env plugin and its agents, as
//! plain Rust with no I/O and no dependencies, so it is tested natively
//! (`cargo test -p desktop-kit` in plugins/).
//!
//! - [`ui`]: widgets, pointer and keyboard handling, the element tree, rendering.
//! - [`font`]: a 3x5 bitmap font.
//! - [`tasks`]: the tasks, their layouts randomised from the seed, instructions
//!   and success checks.
//! - [`solver`]: a scripted policy that solves every task from the element tree.

pub mod font;
pub mod rng;
pub mod solver;
pub mod tasks;
pub mod ui;

pub use solver::{Options, menu_of, next_input};
pub use tasks::{Goal, Outcome, Task, TaskKind, success_reward};
pub use ui::{Desktop, Input, Node, Rect};

#[cfg(test)]
mod tests;
