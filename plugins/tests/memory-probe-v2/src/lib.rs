//! The memory probe, "changed": identical to `memory-probe` until step 7, then
//! it picks another action. The debugger's replay must notice at frame 7.

const CHANGE_AT: Option<u32> = Some(7);

include!("../../memory-probe/src/probe.rs");
