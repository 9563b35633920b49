//! ludus trainer: local RL on libtorch (tch). Algorithms are built from parts
//! chosen in a TOML config (advantage estimator, policy loss, value loss,
//! entropy and KL terms, optimizer and schedule); sampler threads run wasm env
//! instances with a CPU policy copy and stream trajectories to the learner;
//! metrics and every sampled episode go into the run's database.
//!
//! This crate alone links tch. It opens no SQLite itself: it records through
//! `ludus_arena::train_store`.

pub mod advantage;
pub mod agent;
pub mod checkpoint;
pub mod config;
pub mod learner;
pub mod policy;
pub mod rng;
pub mod sampler;
pub mod train;

/// Whether libtorch sees a CUDA device.
pub fn cuda_available() -> bool {
    tch::Cuda::is_available()
}
