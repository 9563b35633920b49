//! The ludus plugin SDK.
//!
//! Write an environment, an agent or a reward function as a plain Rust type that
//! implements [`Env`], [`Agent`] or [`Reward`], then export it with one macro
//! ([`export_env!`], [`export_agent!`], [`export_reward!`]). The WIT bindings
//! stay hidden. Enable exactly one of the crate features `env`, `agent`,
//! `reward`: the world your plugin implements.
//!
//! See the README for a complete example and the build command.

#[cfg(not(any(feature = "env", feature = "agent", feature = "reward")))]
compile_error!("enable exactly one ludus-sdk feature: `env`, `agent` or `reward`");
#[cfg(any(
    all(feature = "env", feature = "agent"),
    all(feature = "env", feature = "reward"),
    all(feature = "agent", feature = "reward")
))]
compile_error!(
    "enable exactly one ludus-sdk feature: `env`, `agent` or `reward` (build each plugin with `cargo build -p NAME` so features are not unified)"
);

/// Generated bindings. Not part of the stable API: use the re-exports.
#[doc(hidden)]
pub mod bindings {
    // `tool-env` is `env` plus the allocation-free single-copy step, which
    // the SDK derives from `Env::step_flat`, and the tools it offers.
    #[cfg(feature = "env")]
    wit_bindgen::generate!({
        world: "tool-env",
        path: "../wit",
        default_bindings_module: "ludus_sdk::bindings",
        pub_export_macro: true,
        export_macro_name: "__export_world",
    });
    #[cfg(feature = "agent")]
    wit_bindgen::generate!({
        world: "agent",
        path: "../wit",
        default_bindings_module: "ludus_sdk::bindings",
        pub_export_macro: true,
        export_macro_name: "__export_world",
    });
    #[cfg(feature = "reward")]
    wit_bindgen::generate!({
        world: "reward",
        path: "../wit",
        default_bindings_module: "ludus_sdk::bindings",
        pub_export_macro: true,
        export_macro_name: "__export_world",
    });
}

pub use bindings::ludus::plugin::types::*;

mod util;
pub use util::*;

pub mod log;

#[cfg(feature = "agent")]
pub mod memory;

#[cfg(any(feature = "agent", feature = "reward"))]
pub mod model;

pub mod tools;

#[cfg(feature = "env")]
mod env;
#[cfg(feature = "env")]
pub use env::{Env, write_vector};

#[cfg(feature = "agent")]
mod agent;
#[cfg(feature = "agent")]
pub use agent::Agent;

#[cfg(feature = "reward")]
mod reward;
#[cfg(feature = "reward")]
pub use reward::Reward;

/// Runtime support for the export macros.
#[doc(hidden)]
pub mod __rt {
    #[cfg(feature = "agent")]
    pub use crate::agent::AgentState;
    #[cfg(feature = "env")]
    pub use crate::env::EnvState;
    #[cfg(feature = "reward")]
    pub use crate::reward::RewardState;
}
