//! The memory probe: a test agent whose every step shows the debugger what it
//! saw. See `probe.rs`.

/// This build never changes its behaviour (compare `memory-probe-v2`).
const CHANGE_AT: Option<u32> = None;

include!("probe.rs");
