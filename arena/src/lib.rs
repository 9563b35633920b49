//! The ludus arena: runs wasm agents against wasm environments, scored by wasm
//! reward functions, many episodes in parallel, sandboxed, reproducible from a
//! seed, with every frame recorded in one SQLite file.
//!
//! This crate alone links wasmtime and opens SQLite. Its public API speaks in
//! the contract's own data types ([`model`]), never in wasmtime's or rusqlite's.

mod engine;
mod host;
pub mod memory;
pub mod model;
pub mod plugin;
pub mod run;
pub mod store;
mod recorder;

pub use plugin::{Limits, LoadError, Plugin, PluginKind, CONTRACT_VERSION};
pub use run::{PluginSpec, RunError, RunReport, RunSpec, EpisodeReport, Outcome};
pub use store::{Db, StoreError};
