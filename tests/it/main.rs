//! The integration tests of the `ludus` package, in one binary: each module
//! was a test binary of its own, and linking wasmtime, libtorch and eframe
//! into eight binaries cost more than running them. `cargo test -p ludus
//! --test it arena::` runs one module's tests.

mod support;

mod architecture;
mod arena;
mod checkpoint_agent;
mod debugger;
mod desktop;
mod export;
mod hardening;
mod ide;
mod llm;
mod policy;

mod polyglot;
mod python;
mod recording_compat;
mod scale;
mod serve;
mod suite;
mod train;
