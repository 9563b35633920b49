//! The `ludus` package's library part: the IDE, so that its UI tests can
//! build its state and drive it headless.

pub mod ide;
