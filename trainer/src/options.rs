//! What a training run is given and what it reports, whichever policy it
//! trains (the observation-acting networks of `train`, or the language
//! model of `llm::grpo`): options, errors, per-update reports, the summary,
//! the device and the checkpoint folder.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use ludus_arena::{LoadError, StoreError};
use tch::Device;

use crate::checkpoint::CheckpointError;
use crate::config::{Config, ConfigError};

/// Where the learner runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceChoice {
    /// CUDA when available, else CPU.
    Auto,
    Cpu,
    Cuda,
}

pub struct TrainOptions {
    pub config: Config,
    pub db: PathBuf,
    pub device: DeviceChoice,
    pub resume: bool,
    /// Set from another thread to end the run after the update in progress
    /// (with a checkpoint, so `--resume` continues it); the run is recorded
    /// as `stopped`.
    pub stop: Option<Arc<AtomicBool>>,
}

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("{0}")]
    Env(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("{0}")]
    Device(String),
    #[error("sampler {sampler} failed: {message}")]
    Sampler { sampler: usize, message: String },
}

impl TrainError {
    /// Whether the user can fix it (bad config, plugin, device or checkpoint).
    pub fn is_usage(&self) -> bool {
        !matches!(self, TrainError::Store(StoreError::Sql(_)))
    }
}

/// Progress after one update.
#[derive(Clone, Debug)]
pub struct UpdateReport {
    pub update: u64,
    pub updates: u64,
    pub env_steps: u64,
    pub episodes: u64,
    /// Mean return of the last `stop.window` episodes.
    pub mean_return: Option<f64>,
    pub metrics: Vec<(String, f64)>,
    pub checkpoint: Option<PathBuf>,
}

impl UpdateReport {
    pub fn metric(&self, name: &str) -> Option<f64> {
        self.metrics.iter().find(|(n, _)| n == name).map(|m| m.1)
    }
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct TrainSummary {
    pub run_id: String,
    pub db: PathBuf,
    pub device: String,
    pub updates: u64,
    pub env_steps: u64,
    pub episodes: u64,
    pub mean_return: Option<f64>,
    pub reached_target: bool,
    pub seconds: f64,
    /// Samples the learner trained on (after dropping stale ones).
    pub samples_trained: u64,
    /// Env instances and the seconds they spent stepping (delays included), summed.
    pub envs: usize,
    pub env_busy_seconds: f64,
    pub checkpoint: PathBuf,
}

/// Picks the learner's device.
pub fn device(choice: DeviceChoice) -> Result<Device, TrainError> {
    match choice {
        DeviceChoice::Cpu => Ok(Device::Cpu),
        DeviceChoice::Auto if crate::cuda_available() => Ok(Device::Cuda(0)),
        DeviceChoice::Auto => Ok(Device::Cpu),
        DeviceChoice::Cuda if crate::cuda_available() => Ok(Device::Cuda(0)),
        DeviceChoice::Cuda => Err(TrainError::Device(
            "--device cuda: no CUDA device is available here (use --device cpu, or run on a machine with a GPU)".into(),
        )),
    }
}

/// The checkpoint folder of a run.
pub fn checkpoint_dir(config: &Config, db: &Path) -> PathBuf {
    let base = db.parent().unwrap_or(Path::new("."));
    match &config.checkpoint.dir {
        Some(d) => base.join(d),
        None => {
            let stem = db
                .file_stem()
                .map_or_else(|| "ludus".into(), |s| s.to_string_lossy());
            base.join(format!("{stem}-{}-checkpoints", config.name))
        }
    }
}
