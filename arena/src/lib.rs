//! The ludus arena: runs wasm agents against wasm environments, scored by wasm
//! reward functions, many episodes in parallel, sandboxed, reproducible from a
//! seed, with every frame recorded in one SQLite file.
//!
//! This crate alone links wasmtime and opens SQLite. Its public API speaks in
//! the contract's own data types ([`model`]), never in wasmtime's or rusqlite's.

pub mod chat;
pub mod codec;
mod contract;
pub mod copy;
pub mod driven;
mod engine;
pub mod episode;
pub mod export;
mod host;
pub mod memory;
pub mod model;
pub mod pg;
pub mod plugin;
pub mod recorder;
pub mod replay;
pub mod run;
pub mod stopwatch;
pub mod store;
mod stores;
pub mod train_store;

pub use engine::{on_first_compile, pooling, set_cache_dir};
pub use plugin::{
    CONTRACT_VERSION, LimitError, Limits, LoadError, Plugin, PluginKind, Refusal, VectorStep,
};
pub use run::{
    AgentSpec, EpisodeFinish, EpisodeReport, NativeAgent, NativeAgentError, NativeAgentFactory,
    Outcome, PluginSpec, PreparedAgent, RunError, RunReport, RunSpec, Stepper, new_run_id,
};
pub use store::{Db, SqlError, StoreError};
