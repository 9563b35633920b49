use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "ludus",
    version,
    about = "An IDE, debugger and training arena for AI agents: wasm agents, environments and rewards."
)]
pub struct Cli {
    /// With no subcommand, `ludus` opens the IDE.
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run episodes of an agent in an environment and record every frame.
    Run(RunArgs),
    /// Measure CartPole steps/s natively, through wasm, batched, and recorded.
    Bench(BenchArgs),
    /// Read and set execution memory stored in a database.
    Memory(MemoryArgs),
    /// Step through a recorded episode: print the frames where breakpoints
    /// hit, with watches; with no --break, an interactive prompt.
    Debug(DebugArgs),
    /// Compare two episodes (first divergence, step-aligned summary) or, with
    /// --runs, two runs. Exit 1 when they differ, 0 when identical.
    Diff(DiffArgs),
    /// Write recorded episodes for other tools: JSON lines (frames, model
    /// calls as chat messages), Parquet tables, or OpenTelemetry traces.
    Export(crate::export_cmd::ExportArgs),
    /// Serve an env plugin over the network in OpenEnv's protocol
    /// (WebSocket sessions at /ws, /health, /schema, MCP tools).
    Serve(ServeArgs),
    /// Copy recordings between SQLite files and PostgreSQL databases
    /// (`postgres://USER:PASSWORD@HOST:PORT/DB`): a run, or every run.
    Copy(CopyArgs),
    /// Play episodes from a PostgreSQL job queue (`ludus run --db
    /// postgres://... --workers` fills it) and record them there.
    Worker(WorkerArgs),
    /// Replay an episode to a frame, edit memory and/or the action there,
    /// and play a new branch to its end.
    Fork(ForkArgs),
    /// Play a recorded episode again with a new build of a plugin (same seed,
    /// same other plugins) and diff it against the recording.
    Rerun(RerunArgs),
    /// Measure any env plugin's steps/s through the wasm boundary, observations
    /// (screenshots included) copied out every step.
    BenchEnv(BenchEnvArgs),
    /// Regression suites for CI: thresholds, baselines with a statistical gate, reports.
    Suite(SuiteArgs),
    /// Train a policy with RL on a wasm env (config in TOML), recording metrics and episodes.
    Train(TrainArgs),
    /// Compare sync and decoupled training on slow envs, and PPO CartPole samples/s.
    TrainBench(TrainBenchArgs),
    /// Write a new plugin project (env, agent or reward) in Rust, Python or
    /// JavaScript that builds with `ludus build` and runs in `ludus run`.
    New(crate::new_cmd::NewArgs),
    /// Build a plugin project (Cargo.toml, pyproject.toml or package.json)
    /// into a wasm component and print its path.
    Build(crate::build_cmd::BuildArgs),
    /// CartPole in Rust, Python and JavaScript side by side: load time (first
    /// and cached) and steps/s, and gymnasium's own CartPole when installed.
    BenchLang(ludus_bench::lang::BenchLangArgs),
    /// Open the IDE (the default with no subcommand): runs, the debugger
    /// with timeline, memory tree, breakpoints and fork, plugin hot reload.
    Ide(ludus::ide::IdeArgs),
}

#[derive(Args, Debug)]
pub struct DebugArgs {
    /// The database holding the episode.
    pub db: PathBuf,
    /// The episode's id (as `ludus run --json` prints it).
    #[arg(long)]
    pub episode: i64,
    /// A breakpoint: a CEL expression over the frame, e.g. `reward < 0` or
    /// `memory["/episode/plan"] != prev.memory["/episode/plan"]`. Repeatable.
    #[arg(long = "break", value_name = "EXPR")]
    pub breaks: Vec<String>,
    /// A watch: a CEL expression printed at every stop. Repeatable.
    #[arg(long = "watch", value_name = "EXPR")]
    pub watches: Vec<String>,
    /// Print one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    /// Stop after this many hits.
    #[arg(long, default_value_t = 1000)]
    pub max_hits: usize,
}

#[derive(Args, Debug)]
pub struct DiffArgs {
    /// The database holding the first episode (or run).
    pub db: PathBuf,
    /// The first episode's id (a run id with --runs); `OTHER.db:ID` takes it from another database.
    pub a: String,
    /// The second episode's id (a run id with --runs); `OTHER.db:ID` takes it from another database.
    pub b: String,
    /// Compare two runs episode by episode instead of two episodes.
    #[arg(long)]
    pub runs: bool,
    /// Print one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ForkArgs {
    pub db: PathBuf,
    /// The episode to branch from.
    #[arg(long)]
    pub episode: i64,
    /// The frame where the edits apply (before the agent acts there).
    #[arg(long)]
    pub frame: u64,
    /// Set a memory path (any scope): `PATH=VALUE`. Repeatable.
    #[arg(long = "set", value_name = "PATH=VALUE")]
    pub set: Vec<String>,
    /// Delete a memory path. Repeatable.
    #[arg(long = "delete", value_name = "PATH")]
    pub delete: Vec<String>,
    /// Replace the action at the fork frame: `discrete:1`, `click:10,20`,
    /// `type:hello`, `key:Enter`, `noop`, ... or JSON.
    #[arg(long)]
    pub action: Option<String>,
    /// Answer the fork frame's model call number CALL (from 0) with TEXT
    /// instead of the model: "what if the model had said this". Repeatable.
    #[arg(long = "model-response", value_name = "CALL=TEXT")]
    pub model_responses: Vec<String>,
    /// A model endpoint for the plugins' model calls:
    /// `[NAME=]URL[,model=M][,api-key-env=VAR][,price-in=USD][,price-out=USD][,timeout-s=S]`
    /// (an OpenAI-compatible server; NAME defaults to `default`; prices per
    /// million tokens; the key is read from VAR and never recorded), or
    /// `[NAME=]policy:PATH[,batch=N][,dtype=f32|bf16][,device=cpu|cuda|auto]` to answer in this process from a GGUF file or a
    /// Hugging Face folder (the built-in backend). Repeatable.
    #[arg(long = "model", value_name = "[NAME=]URL[,OPTION=VALUE...]")]
    pub models: Vec<String>,
    /// Print one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct RerunArgs {
    pub db: PathBuf,
    /// The recorded episode to play again.
    #[arg(long)]
    pub episode: i64,
    /// A new build of the environment plugin.
    #[arg(long)]
    pub env: Option<PathBuf>,
    /// A new build of the agent plugin, or another trained policy:
    /// `checkpoint:PATH` (played with the recorded agent config).
    #[arg(long)]
    pub agent: Option<PathBuf>,
    /// A new build of the reward plugin.
    #[arg(long)]
    pub reward: Option<PathBuf>,
    /// Serve every model call whose request equals a recorded one from the
    /// recording; only changed requests go to a live endpoint.
    #[arg(long)]
    pub model_from_recording: bool,
    /// A model endpoint for the plugins' model calls:
    /// `[NAME=]URL[,model=M][,api-key-env=VAR][,price-in=USD][,price-out=USD][,timeout-s=S]`
    /// (an OpenAI-compatible server; NAME defaults to `default`; prices per
    /// million tokens; the key is read from VAR and never recorded), or
    /// `[NAME=]policy:PATH[,batch=N][,dtype=f32|bf16][,device=cpu|cuda|auto]` to answer in this process from a GGUF file or a
    /// Hugging Face folder (the built-in backend). Repeatable.
    #[arg(long = "model", value_name = "[NAME=]URL[,OPTION=VALUE...]")]
    pub models: Vec<String>,
    /// Print one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// The environment plugin (.wasm component).
    #[arg(long)]
    pub env: PathBuf,
    /// The agent plugin (.wasm component), or a trained policy:
    /// `checkpoint:PATH` (a `ludus train` checkpoint file).
    #[arg(long)]
    pub agent: PathBuf,
    /// A reward plugin; when given, its reward is the one recorded.
    #[arg(long)]
    pub reward: Option<PathBuf>,
    /// Config string passed to the environment's `init`.
    #[arg(long, default_value = "")]
    pub env_config: String,
    /// Config string passed to the agent's `init`; for a checkpoint agent,
    /// `greedy` (the most likely action, the default) or `sample`.
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
    /// The SQLite file to record into, or a PostgreSQL database
    /// (`postgres://USER:PASSWORD@HOST:PORT/DB`).
    #[arg(long, default_value = "ludus.db")]
    pub db: PathBuf,
    /// Wait this long after every env step, as a slow env would (a GUI
    /// in a VM): to rehearse or benchmark slow runs. Frames and digests are
    /// unchanged; queued runs' workers wait too.
    #[arg(long, default_value_t = 0.0, value_name = "MS")]
    pub env_step_delay_ms: f64,
    /// With a PostgreSQL --db: put the episodes on its job queue for
    /// `ludus worker`s (on any machine) to play, and follow them.
    #[arg(long)]
    pub workers: bool,
    /// Print one JSON object on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Override a plugin limit: `[env|agent|reward.]KEY=VALUE` with KEY one of
    /// fuel (per call), memory-mb, timeout-ms (per call), memory-writes (per
    /// call), transfer-mb (data a call hands the host), episode-memory-writes,
    /// frames, tokens and model-calls (per episode); or the run's
    /// `run.cost-usd=X` (its whole spending on model calls). Repeatable.
    #[arg(long = "limit", value_name = "[PLUGIN.]KEY=VALUE")]
    pub limits: Vec<String>,
    /// A model endpoint for the plugins' model calls:
    /// `[NAME=]URL[,model=M][,api-key-env=VAR][,price-in=USD][,price-out=USD][,timeout-s=S]`
    /// (an OpenAI-compatible server; NAME defaults to `default`; prices per
    /// million tokens; the key is read from VAR and never recorded), or
    /// `[NAME=]policy:PATH[,batch=N][,dtype=f32|bf16][,device=cpu|cuda|auto]` to answer in this process from a GGUF file or a
    /// Hugging Face folder (the built-in backend). Repeatable.
    #[arg(long = "model", value_name = "[NAME=]URL[,OPTION=VALUE...]")]
    pub models: Vec<String>,
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

pub use ludus_bench::cli::{BenchArgs, BenchEnvArgs, BenchTarget, TrainBenchArgs, TrainDevice};

#[derive(Args, Debug)]
pub struct SuiteArgs {
    #[command(subcommand)]
    pub command: SuiteCommand,
}

#[derive(Subcommand, Debug)]
pub enum SuiteCommand {
    /// Run every case of a suite file, judge it, and exit 0 (all passed),
    /// 1 (some case failed or regressed) or 2 (the suite could not run).
    Run(SuiteRunArgs),
    /// Run every case and store its statistics and episode digests as a baseline.
    Baseline(SuiteBaselineArgs),
}

#[derive(Args, Debug)]
pub struct SuiteRunArgs {
    /// The suite file (TOML); paths in it resolve relative to it.
    pub suite: PathBuf,
    /// The SQLite file (or PostgreSQL database, postgres://...) every case
    /// is recorded into.
    #[arg(long, default_value = "ludus-suite.db")]
    pub db: PathBuf,
    /// Worker threads per case (default: the number of cores).
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Write a JUnit XML report here.
    #[arg(long)]
    pub junit: Option<PathBuf>,
    /// Write a Markdown summary (for a pull-request comment) here.
    #[arg(long)]
    pub markdown: Option<PathBuf>,
    /// Print one JSON object on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Gate on a baseline from `ludus suite baseline`: a case regresses when
    /// its drop is statistically significant.
    #[arg(long)]
    pub baseline: Option<PathBuf>,
    /// Only the cases whose name contains PATTERN (or matches it as a glob).
    #[arg(long, value_name = "PATTERN")]
    pub filter: Option<String>,
    /// Queue every case's episodes in the PostgreSQL `--db` for `ludus
    /// worker`s to play, and judge them when all are recorded.
    #[arg(long)]
    pub workers: bool,
}

#[derive(Args, Debug)]
pub struct SuiteBaselineArgs {
    /// The suite file (TOML).
    pub suite: PathBuf,
    /// Where to write the baseline (JSON).
    #[arg(long)]
    pub out: PathBuf,
    /// The SQLite file every case is recorded into.
    #[arg(long, default_value = "ludus-suite.db")]
    pub db: PathBuf,
    /// Worker threads per case (default: the number of cores).
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Only the cases whose name contains PATTERN (or matches it as a glob).
    #[arg(long, value_name = "PATTERN")]
    pub filter: Option<String>,
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// The env plugin (.wasm) each session plays.
    #[arg(long)]
    pub env: PathBuf,
    /// The env's config string.
    #[arg(long, default_value = "")]
    pub env_config: String,
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// The port (0: any free port; the one chosen is printed).
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    /// Record every episode of every session into this SQLite file (or
    /// PostgreSQL database: recorded into `ludus-serve-PID.db` here as the
    /// sessions play, copied there when the server stops).
    #[arg(long)]
    pub db: Option<PathBuf>,
    /// Sessions at once; the next client gets a `CAPACITY_REACHED` error.
    #[arg(long, default_value_t = 64)]
    pub max_sessions: usize,
    /// Seconds a session may stay silent before it is closed.
    #[arg(long, default_value_t = 300.0)]
    pub idle_timeout_s: f64,
    /// Resets that name no seed get seeds derived from this one.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Override an env limit: `[env.]KEY=VALUE` (as `ludus run --limit`).
    #[arg(long = "limit", value_name = "[env.]KEY=VALUE")]
    pub limits: Vec<String>,
}

#[derive(Args, Debug)]
pub struct CopyArgs {
    /// Where the runs are: a .db file or a postgres:// URL.
    pub from: String,
    /// Where they go: a .db file (made if missing) or a postgres:// URL
    /// (its tables made if missing).
    pub to: String,
    /// Only this run (default: every run).
    #[arg(long)]
    pub run: Option<String>,
}

#[derive(Args, Debug)]
pub struct WorkerArgs {
    /// The PostgreSQL database holding the queue (`postgres://...`).
    #[arg(long)]
    pub db: String,
    /// Episodes played at once.
    #[arg(long, default_value_t = 1)]
    pub jobs: usize,
    /// Seconds a leased job stays this worker's without a heartbeat (a
    /// worker that dies loses its jobs to others after this long).
    #[arg(long, default_value_t = 30.0)]
    pub lease_s: f64,
    /// Exit once no job is queued or leased, instead of waiting for more.
    #[arg(long)]
    pub until_empty: bool,
    /// Where plugins fetched from the database are kept (default: a folder
    /// in the system's temporary folder).
    #[arg(long)]
    pub cache: Option<PathBuf>,
}
