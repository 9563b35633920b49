use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "ludus",
    version,
    about = "An IDE, debugger and training arena for AI agents: wasm agents, environments and rewards."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run episodes of an agent in an environment and record every frame.
    Run(RunArgs),
    /// Measure CartPole steps/s natively, through wasm, batched, and recorded.
    Bench(BenchArgs),
    /// Read and set execution memory stored in a database.
    Memory(MemoryArgs),
    /// Train a policy with RL on a wasm env (config in TOML), recording metrics and episodes.
    Train(TrainArgs),
    /// Compare sync and decoupled training on slow envs, and PPO CartPole samples/s.
    TrainBench(TrainBenchArgs),
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// The environment plugin (.wasm component).
    #[arg(long)]
    pub env: PathBuf,
    /// The agent plugin (.wasm component).
    #[arg(long)]
    pub agent: PathBuf,
    /// A reward plugin; when given, its reward is the one recorded.
    #[arg(long)]
    pub reward: Option<PathBuf>,
    /// Config string passed to the environment's `init`.
    #[arg(long, default_value = "")]
    pub env_config: String,
    /// Config string passed to the agent's `init`.
    #[arg(long, default_value = "")]
    pub agent_config: String,
    /// Config string passed to the reward plugin's `init`.
    #[arg(long, default_value = "")]
    pub reward_config: String,
    /// Number of episodes.
    #[arg(long, default_value_t = 10)]
    pub episodes: u64,
    /// Run seed; episode i's seed derives from it and i.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Worker threads (default: the number of cores).
    #[arg(long)]
    pub jobs: Option<usize>,
    /// The SQLite file to record into.
    #[arg(long, default_value = "ludus.db")]
    pub db: PathBuf,
    /// Print one JSON object on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Override a plugin limit: `[env|agent|reward.]KEY=VALUE` with KEY one of
    /// fuel (per call), memory-mb, timeout-ms (per call). Repeatable.
    #[arg(long = "limit", value_name = "[PLUGIN.]KEY=VALUE")]
    pub limits: Vec<String>,
}

#[derive(Args, Debug)]
pub struct BenchArgs {
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
    /// Print one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct MemoryArgs {
    #[command(subcommand)]
    pub command: MemoryCommand,
}

#[derive(Subcommand, Debug)]
pub enum MemoryCommand {
    /// List stored memory (/agent and /user) under a prefix.
    List {
        db: PathBuf,
        #[arg(default_value = "/")]
        prefix: String,
    },
    /// Set a /user/... value (read-only to agents).
    Set {
        db: PathBuf,
        path: String,
        value: String,
    },
    /// Delete a /user/... value.
    Delete { db: PathBuf, path: String },
}

#[derive(Args, Debug)]
pub struct TrainArgs {
    /// The training config (TOML); see configs/.
    pub config: PathBuf,
    /// The SQLite file to record metrics and sampled episodes into.
    #[arg(long, default_value = "ludus.db")]
    pub db: PathBuf,
    /// Where the learner runs (default: CUDA when available, else CPU).
    #[arg(long, value_enum, default_value_t = TrainDevice::Auto)]
    pub device: TrainDevice,
    /// Continue the run from its latest checkpoint.
    #[arg(long)]
    pub resume: bool,
    /// Print one JSON summary on stdout (progress goes to stderr).
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrainDevice {
    Auto,
    Cpu,
    Cuda,
}

#[derive(Args, Debug)]
pub struct TrainBenchArgs {
    /// Folder of the built example plugins (cartpole.wasm, maze.wasm).
    #[arg(long, default_value = "plugins/target/wasm32-wasip2/release")]
    pub plugins: PathBuf,
    /// Updates per slow-env measurement.
    #[arg(long, default_value_t = 12)]
    pub updates: u64,
    /// The slow env's added step latency, uniform in MIN,MAX milliseconds.
    #[arg(long, default_value = "5,50", value_name = "MIN,MAX")]
    pub delay_ms: String,
    /// Print one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}
