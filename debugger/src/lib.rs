//! The ludus trajectory debugger, as a library the command line and the IDE
//! both drive: a [`Session`] keeps a cursor on a frame of a recorded (or live)
//! episode and moves it forward and back, to breakpoints written in CEL;
//! [`diff`] compares frames, episodes and runs; [`fork`] replays an episode to
//! a frame, applies edits (memory, the action) and plays a new branch.
//!
//! No UI here, and no file or database access of its own: recordings are read
//! through `ludus_arena::store`, and plugins run through `ludus_arena`'s
//! stepper. Stepping, expressions and diffs are functions of data.

pub mod diff;
pub mod expr;
pub mod fork;
pub mod session;
pub mod source;
pub mod view;

pub use expr::{Expr, ExprError};
pub use session::{Breakpoint, Hit, Session};
pub use source::{FrameSource, Recording};
pub use view::FrameView;

#[cfg(test)]
mod tests;

/// What can go wrong in a debugging session.
#[derive(Debug, thiserror::Error)]
pub enum DebugError {
    #[error(transparent)]
    Store(#[from] ludus_arena::StoreError),
    #[error(transparent)]
    Run(#[from] ludus_arena::RunError),
    #[error(transparent)]
    Expr(#[from] ExprError),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Replay(Box<fork::Mismatch>),
}
