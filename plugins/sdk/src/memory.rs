//! The agent's execution memory: text values addressed by paths.
//!
//! - `/episode/...`: cleared at the start of every episode.
//! - `/agent/...`: persists across episodes and runs. Every episode of a run sees
//!   it as it was when the run started (plus its own writes); the writes of the
//!   run's finished episodes are applied in episode order when the run ends.
//! - `/user/...`: set by the user, read-only here.
//!
//! Every write is recorded with the frame it happened in.

use crate::bindings::ludus::plugin::memory as host;

/// The value at `path`, if any.
pub fn read(path: &str) -> Option<String> {
    host::read(path)
}

/// Sets `path` to `value`. Fails for read-only scopes and malformed paths.
pub fn write(path: &str, value: &str) -> Result<(), String> {
    host::write(path, value)
}

/// Removes `path`.
pub fn delete(path: &str) -> Result<(), String> {
    host::delete(path)
}

/// Paths under `prefix`, sorted.
pub fn list(prefix: &str) -> Vec<String> {
    host::list(prefix)
}
