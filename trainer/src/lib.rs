//! ludus trainer: local RL on libtorch (tch). Algorithms are built from parts
//! chosen in a TOML config (advantage estimator, policy loss, value loss,
//! entropy and KL terms, optimizer and schedule); sampler threads run wasm env
//! instances with a CPU policy copy and stream trajectories to the learner;
//! metrics and every sampled episode go into the run's database.
//!
//! This crate alone links tch. It opens no SQLite itself: it records through
//! `ludus_arena::recorder`, the one recorder `ludus run` uses too.

pub mod advantage;
pub mod agent;
pub mod checkpoint;
pub mod config;
pub mod gpu;
pub mod learner;
pub mod llm;
pub mod options;
pub mod policy;
pub mod rng;
pub mod sampler;
pub mod train;

/// Whether libtorch sees a CUDA device (loading its CUDA backend first).
pub fn cuda_available() -> bool {
    cuda::load();
    tch::Cuda::is_available()
}

/// libtorch's CUDA backend lives in `libtorch_cuda.so`, which registers
/// itself with libtorch when loaded. Nothing in our code calls into it, so the
/// linker drops it from the binary's needed libraries, and a binary built
/// against a CUDA-enabled libtorch would never see the GPU. Loading it at link
/// time would also make every `ludus` command (and every test) pay for the
/// CUDA libraries, so it is loaded here, on the first question about CUDA.
mod cuda {
    use std::sync::Once;

    static LOAD: Once = Once::new();

    pub fn load() {
        LOAD.call_once(|| {
            #[cfg(target_os = "linux")]
            load_linux();
        });
    }

    #[cfg(target_os = "linux")]
    fn load_linux() {
        use libloading::os::unix::{Library, RTLD_GLOBAL, RTLD_NOW};
        // By name first (LD_LIBRARY_PATH, then the binary's run path, which
        // points at the libtorch it was built against), then that folder as
        // the build saw it.
        let mut candidates = vec![std::path::PathBuf::from("libtorch_cuda.so")];
        if let Some(dir) = option_env!("LUDUS_LIBTORCH_LIB") {
            candidates.push(std::path::Path::new(dir).join("libtorch_cuda.so"));
        }
        for name in candidates {
            // SAFETY: loading libtorch's own CUDA library into a process that
            // already has the matching libtorch; its initialisers only
            // register the CUDA backend.
            match unsafe { Library::open(Some(&name), RTLD_NOW | RTLD_GLOBAL) } {
                Ok(lib) => {
                    // Kept for the life of the process: libtorch holds
                    // pointers into it.
                    std::mem::forget(lib);
                    tracing::debug!(lib = %name.display(), "loaded libtorch's CUDA backend");
                    return;
                }
                Err(e) => {
                    tracing::debug!(lib = %name.display(), error = %e, "libtorch's CUDA backend not loaded");
                }
            }
        }
    }
}
