//! The small types every ludus crate speaks: how an episode ended
//! ([`Outcome`]), the episode seeds ([`episode_seed`], [`derived_seed`]) and
//! the one SplitMix64 generator ([`SplitMix64`]) behind seeds, benchmarks,
//! the trainer and the suite's bootstrap; and [`panic_message`], what a
//! caught panic says.
//!
//! No wasmtime, SQLite or libtorch here: every crate, light or heavy, can
//! depend on this one.

pub mod json_float;
pub mod outcome;
pub mod rng;

pub use outcome::{Outcome, ParseOutcomeError};
pub use rng::{SplitMix64, derived_seed, episode_seed, splitmix64, unit_f64};

/// The first line of a caught panic's message (`None` when its payload is
/// not text).
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> Option<&str> {
    panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .map(|m| m.lines().next().unwrap_or_default())
}
