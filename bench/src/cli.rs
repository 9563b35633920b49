//! The benchmark commands' arguments (`ludus bench`, `bench-env`,
//! `train-bench`); the `ludus` binary embeds them in its command line.

use std::path::PathBuf;

use clap::Args;

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// What to measure: the arena (CartPole steps/s, the default) or the
    /// debugger (open, random jump, breakpoint scan on a long episode).
    #[arg(value_enum, default_value_t = BenchTarget::Arena)]
    pub target: BenchTarget,
    /// Frames in the recorded episode of the debugger benchmark.
    #[arg(long, default_value_t = 1_000_000)]
    pub frames: u64,
    /// The CartPole plugin to measure.
    #[arg(
        long,
        default_value = "plugins/target/wasm32-wasip2/release/cartpole.wasm"
    )]
    pub cartpole: PathBuf,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 2.0)]
    pub seconds: f64,
    /// Environment copies per call in the batched measurement.
    #[arg(long, default_value_t = 256)]
    pub batch: usize,
    /// Rounds of the recorded measurement (each: a recorded run of SECONDS
    /// between two unrecorded halves); the overheads are their median.
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// `llm`: the model endpoint (an OpenAI-compatible server, e.g.
    /// `scripts/model-server.sh models/tiny.gguf --slots 32`).
    #[arg(long)]
    pub model: Option<String>,
    /// `llm`: a real model's endpoint for the replay and success-rate
    /// measurements (e.g. SmolLM2; default: the `--model` one).
    #[arg(long)]
    pub real_model: Option<String>,
    /// `llm`: episodes per agent in the success-rate measurement.
    #[arg(long, default_value_t = 8)]
    pub success_episodes: u64,
    /// `llm`: the agent's config (e.g. `schema=off` for a model that
    /// cannot follow a JSON schema).
    #[arg(long, default_value = "")]
    pub agent_config: String,
    /// `backend`: the agent's config for the LLM maze agent.
    #[arg(long, default_value = "max-tokens=32,schema=off,temperature=0.7")]
    pub backend_agent_config: String,
    /// `llm`: episodes per measurement of episodes/s and success rates.
    #[arg(long, default_value_t = 32)]
    pub episodes: u64,
    /// `llm-train`: the folder of the built example plugins.
    #[arg(long, default_value = "plugins/target/wasm32-wasip2/release")]
    pub plugins: PathBuf,
    /// `llm-train`: run only this setup (`sync-f32`, `sync-bf16`,
    /// `sync-bf16-offload`, `async-bf16`) here and print its figures as
    /// JSON; without it each setup runs in a process of its own.
    #[arg(long)]
    pub setup: Option<String>,
    /// `llm-train`: updates per setup.
    #[arg(long, default_value_t = 20)]
    pub updates: u64,
    /// `llm-train`: the task the model learns through its agent plugin.
    #[arg(long, value_enum, default_value_t = LlmTask::WordEcho)]
    pub task: LlmTask,
    /// `llm-train`: where the model trains (default: CUDA when available,
    /// else CPU).
    #[arg(long, value_enum, default_value_t = TrainDevice::Auto)]
    pub device: TrainDevice,
    /// Print one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum BenchTarget {
    Arena,
    Debugger,
    /// LLM agents: host overhead per model call, replay against live,
    /// episodes/s by jobs, success rates against the random agent.
    Llm,
    /// The built-in model backend (`--model policy:PATH`): generated
    /// tokens/s with 1, 8 and 32 concurrent episodes, calls one at a time
    /// against batched (and against `--real-model` when given).
    Backend,
    /// Training the model an LLM agent calls (`--model PATH`, default
    /// SmolLM2 in models/): sync f32, sync bf16, bf16 with offload and
    /// async bf16; success before and after, sampled and trained tokens/s,
    /// sampling and learner shares, GPU memory.
    LlmTrain,
}

/// `ludus bench llm-train --task`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LlmTask {
    /// Repeat the word shown (`word_echo.wasm` through `llm_text_agent.wasm`).
    WordEcho,
    /// Reach a 7x7 maze's exit in 20 moves (`llm_maze_agent.wasm`).
    Maze,
}

#[derive(Args, Debug)]
pub struct BenchEnvArgs {
    /// The env plugin to measure.
    #[arg(long)]
    pub env: PathBuf,
    /// Config string passed to the environment's `init`.
    #[arg(long, default_value = "")]
    pub env_config: String,
    /// Seconds to measure for.
    #[arg(long, default_value_t = 2.0)]
    pub seconds: f64,
    /// Print one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrainDevice {
    Auto,
    Cpu,
    Cuda,
}

impl From<TrainDevice> for ludus_trainer::train::DeviceChoice {
    fn from(d: TrainDevice) -> Self {
        match d {
            TrainDevice::Auto => Self::Auto,
            TrainDevice::Cpu => Self::Cpu,
            TrainDevice::Cuda => Self::Cuda,
        }
    }
}

#[derive(Args, Debug)]
pub struct TrainBenchArgs {
    /// Folder of the built example plugins (cartpole.wasm, maze.wasm, desktop.wasm).
    #[arg(long, default_value = "plugins/target/wasm32-wasip2/release")]
    pub plugins: PathBuf,
    /// Updates per slow-env measurement.
    #[arg(long, default_value_t = 12)]
    pub updates: u64,
    /// The slow env's added step latency, uniform in MIN,MAX milliseconds.
    #[arg(long, default_value = "5,50", value_name = "MIN,MAX")]
    pub delay_ms: String,
    /// Run only the scenarios whose key (e.g. `grpo_maze_slow`, `ppo_cartpole_cpu`) contains this.
    #[arg(long, value_name = "TEXT")]
    pub only: Option<String>,
    /// Where the learner runs (default: CUDA when available, else CPU).
    #[arg(long, value_enum, default_value_t = TrainDevice::Auto)]
    pub device: TrainDevice,
    /// Print one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}
