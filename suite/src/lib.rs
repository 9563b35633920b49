//! Arena regression suites: the suite file and its matrix expansion
//! ([`model`]), per-case figures and the statistics of the baseline gate
//! ([`stats`], [`baseline`]), and judging and reporting ([`report`]).
//!
//! This crate does no I/O and knows nothing of wasmtime or SQLite: the binary
//! reads the files, runs the cases through the arena and hands the episodes in.

pub mod baseline;
pub mod model;
pub mod report;
pub mod stats;

pub use baseline::{Baseline, BaselineCase, Comparison};
pub use model::{Case, Location, Suite, SuiteError};
pub use report::{CaseResult, SuiteReport};
pub use stats::{CaseStats, Episode};
