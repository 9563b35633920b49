//! Running episodes: seeds, worker threads, the episode loop, and the run's
//! report.

use std::collections::BTreeMap;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::chat::{Budget, EpisodeModels, ModelCall, ModelSetup, SharedModels};
use crate::episode::EpisodeTracker;
pub use crate::episode::{EpisodeReport, info_says_success};
use crate::memory::{EpisodeMemory, MemoryBase, MemoryError};
use crate::model::{
    Action, EnvInfo, EpisodeEnd, Frame, LogLine, MemoryWrite, Observation, StepContext, Timing,
    Transition,
};
use crate::plugin::{
    AgentInstance, Crash, EnvInstance, Limits, LoadError, Plugin, PluginKind, RewardInstance,
};
pub use crate::recorder::EpisodeFinish;
use crate::recorder::{Recorder, RunRecord};
use crate::stopwatch::Stamp;
use crate::store::{Db, StoreError};

// Outcomes and seeds live in ludus-core so every crate shares one definition;
// they stay reachable here under their old paths.
pub use ludus_core::{Outcome, derived_seed, episode_seed, splitmix64};

/// A plugin to load: its file, config string and limits.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PluginSpec {
    pub path: PathBuf,
    pub config: String,
    pub limits: Limits,
}

/// An agent that runs in the host process instead of in wasm: a trained
/// policy, say, which the `ludus` binary builds through the trainer (this
/// crate cannot: it does not link tch). One is made per episode. It sees no
/// execution memory and writes none; the episode's memory is still kept for
/// it, so the user's edits in the debugger are recorded as for a wasm agent.
///
/// An `Err` or a panic from any call ends the episode as `crashed` with the
/// message, exactly as a trap does for a wasm agent.
/// Why a native agent could not be made or could not act: one line for the
/// user, recorded as the episode's crash message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NativeAgentError(pub String);

impl From<String> for NativeAgentError {
    fn from(message: String) -> NativeAgentError {
        NativeAgentError(message)
    }
}

impl From<&str> for NativeAgentError {
    fn from(message: &str) -> NativeAgentError {
        NativeAgentError(message.to_string())
    }
}

pub trait NativeAgent: Send {
    /// Called once before the first `act`; `seed` is derived from the
    /// episode's seed (the same one a wasm agent gets), so anything random the
    /// agent does is a function of the episode's seed.
    fn begin_episode(
        &mut self,
        env: &EnvInfo,
        task: &str,
        seed: u64,
    ) -> Result<(), NativeAgentError>;
    fn act(
        &mut self,
        observation: &Observation,
        context: StepContext,
    ) -> Result<Action, NativeAgentError>;
    /// Called when the env ended the episode (not after a crash or interrupt).
    fn end_episode(&mut self, end: &EpisodeEnd) -> Result<(), NativeAgentError> {
        let _ = end;
        Ok(())
    }
}

/// Makes a [`NativeAgent`] for each episode, on any worker thread.
pub trait NativeAgentFactory: Send + Sync + fmt::Debug {
    /// What the recording names the agent: `KIND:LOCATION`, e.g.
    /// `checkpoint:/runs/ppo/latest.safetensors`. A replay hands it back to an
    /// [`AgentResolver`](crate::replay::AgentResolver) to rebuild the agent.
    fn source(&self) -> String;
    /// blake3 (hex) of the bytes the agent is built from, so a replay detects
    /// a changed agent as it detects a changed plugin.
    fn hash(&self) -> String;
    /// The config string the agent was built with (recorded, and given back
    /// to the resolver).
    fn config(&self) -> String;
    /// Whether the agent can act in this env (its observation and action
    /// spaces), checked before anything is written: `Err` is a one-line
    /// message for the user.
    fn check_env(&self, env: &EnvInfo) -> Result<(), NativeAgentError>;
    /// A fresh agent for one episode.
    fn make(&self) -> Result<Box<dyn NativeAgent>, NativeAgentError>;
}

/// The agent of a run: a wasm plugin, or a native agent supplied by the caller.
#[derive(Clone, Debug)]
pub enum AgentSpec {
    Plugin(PluginSpec),
    Native(Arc<dyn NativeAgentFactory>),
}

impl From<PluginSpec> for AgentSpec {
    fn from(p: PluginSpec) -> AgentSpec {
        AgentSpec::Plugin(p)
    }
}

impl AgentSpec {
    /// The plugin, when the agent is one.
    pub fn plugin(&self) -> Option<&PluginSpec> {
        match self {
            AgentSpec::Plugin(p) => Some(p),
            AgentSpec::Native(_) => None,
        }
    }

    /// The agent's config string.
    pub fn config(&self) -> String {
        match self {
            AgentSpec::Plugin(p) => p.config.clone(),
            AgentSpec::Native(f) => f.config(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct RunSpec {
    pub env: PluginSpec,
    pub agent: AgentSpec,
    pub reward: Option<PluginSpec>,
    pub episodes: u64,
    pub seed: u64,
    pub jobs: usize,
    pub db: PathBuf,
    /// Model endpoints, the run's cost cap, recorded calls to serve.
    pub models: ModelSetup,
    /// Waited after every env step, as a slow env (a GUI in a VM) would
    /// make its caller wait: for benchmarks and rehearsals of slow runs.
    /// Not part of what is recorded (frames and digests are the same).
    pub step_delay: std::time::Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Spec(String),
}

#[derive(Clone, Debug, Serialize)]
pub struct RunReport {
    pub run_id: String,
    pub db: PathBuf,
    pub episodes: Vec<EpisodeReport>,
    #[serde(skip)]
    pub wall: Duration,
    pub env_steps: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub episodes: usize,
    pub success_rate: f64,
    pub mean_return: f64,
    pub min_return: f64,
    pub max_return: f64,
    pub mean_length: f64,
    pub crashed: usize,
    pub env_steps_per_sec: f64,
    /// Model calls of all episodes, refused ones included.
    pub model_calls: u64,
    pub tokens_in: u64,
    pub tokens_out: u64,
    pub cost_usd: f64,
    /// Time spent waiting on live model endpoints, summed over episodes.
    pub model_ms: f64,
    /// Model calls refused by a budget.
    pub budget_refusals: u64,
}

impl RunReport {
    pub fn summary(&self) -> Summary {
        let n = self.episodes.len();
        let nf = n.max(1) as f64;
        let returns = self.episodes.iter().map(|e| e.return_);
        let mut model = crate::model::ModelTotals::default();
        for e in &self.episodes {
            model.merge(&e.model);
        }
        Summary {
            episodes: n,
            success_rate: self.episodes.iter().filter(|e| e.success).count() as f64 / nf,
            mean_return: returns.clone().sum::<f64>() / nf,
            min_return: if n == 0 {
                0.0
            } else {
                returns.clone().fold(f64::INFINITY, f64::min)
            },
            max_return: if n == 0 {
                0.0
            } else {
                returns.fold(f64::NEG_INFINITY, f64::max)
            },
            mean_length: self.episodes.iter().map(|e| e.length as f64).sum::<f64>() / nf,
            crashed: self
                .episodes
                .iter()
                .filter(|e| e.outcome == Outcome::Crashed)
                .count(),
            env_steps_per_sec: self.env_steps as f64 / self.wall.as_secs_f64().max(1e-9),
            model_calls: model.model_calls,
            tokens_in: model.tokens_in,
            tokens_out: model.tokens_out,
            cost_usd: model.cost_usd,
            model_ms: model.model_ms,
            budget_refusals: model.budget_refusals,
        }
    }
}

/// Live counters a caller can poll while a run goes (for a progress bar).
#[derive(Debug, Default)]
pub struct Progress {
    pub episodes_done: AtomicU64,
    pub steps: AtomicU64,
    /// Set to stop the run: running episodes end as `interrupted`.
    pub cancel: AtomicBool,
}

/// The loaded plugins of a run. Everything that can be wrong with the inputs
/// is found here, before anything is written.
#[derive(Clone)]
pub struct Prepared {
    pub spec: RunSpec,
    pub env: Arc<Plugin>,
    pub agent: PreparedAgent,
    pub reward: Option<Arc<Plugin>>,
    pub env_info: EnvInfo,
    /// The tools the env offers (`env-tools`), asked once after `init`
    /// with the run's config.
    pub env_tools: Vec<crate::model::Tool>,
}

/// A run's agent, ready to instantiate.
#[derive(Clone, Debug)]
pub enum PreparedAgent {
    Plugin(Arc<Plugin>),
    Native(Arc<dyn NativeAgentFactory>),
}

impl PreparedAgent {
    /// The plugin, when the agent is one.
    pub fn plugin(&self) -> Option<&Arc<Plugin>> {
        match self {
            PreparedAgent::Plugin(p) => Some(p),
            PreparedAgent::Native(_) => None,
        }
    }

    /// How messages and recordings name the agent: the plugin's path, or the
    /// native agent's source (`checkpoint:PATH`).
    pub fn name(&self) -> String {
        match self {
            PreparedAgent::Plugin(p) => p.path.display().to_string(),
            PreparedAgent::Native(f) => f.source(),
        }
    }

    /// blake3 of the bytes the agent is built from.
    pub fn hash(&self) -> String {
        match self {
            PreparedAgent::Plugin(p) => p.hash.clone(),
            PreparedAgent::Native(f) => f.hash(),
        }
    }
}

/// The most episodes one run may have: its episode rows are written when it
/// starts and its reports kept until it ends, so memory and the first commit
/// grow with the count.
pub const MAX_EPISODES: u64 = 1_000_000;

pub fn prepare(spec: RunSpec) -> Result<Prepared, RunError> {
    if spec.episodes == 0 {
        return Err(RunError::Spec("--episodes must be at least 1".into()));
    }
    if spec.episodes > MAX_EPISODES {
        return Err(RunError::Spec(format!(
            "--episodes {}: at most {MAX_EPISODES} in one run (a run's rows and reports grow with it); split it into several runs, which may share one --db",
            spec.episodes
        )));
    }
    if spec.jobs == 0 {
        return Err(RunError::Spec("--jobs must be at least 1".into()));
    }
    let env = Plugin::load(&spec.env.path, PluginKind::Env, spec.env.limits)?;
    let agent = match &spec.agent {
        AgentSpec::Plugin(a) => {
            PreparedAgent::Plugin(Plugin::load(&a.path, PluginKind::Agent, a.limits)?)
        }
        AgentSpec::Native(f) => PreparedAgent::Native(f.clone()),
    };
    let reward = match &spec.reward {
        Some(r) => Some(Plugin::load(&r.path, PluginKind::Reward, r.limits)?),
        None => None,
    };
    let (env_info, env_tools) = env.describe_env(&spec.env.config)?;
    match (&agent, &spec.agent) {
        (PreparedAgent::Plugin(p), AgentSpec::Plugin(a)) => {
            p.validate(&a.config)?;
        }
        (PreparedAgent::Native(f), _) => f.check_env(&env_info).map_err(|e| RunError::Spec(e.0))?,
        (PreparedAgent::Plugin(_), AgentSpec::Native(_)) => {}
    }
    if let (Some(r), Some(rs)) = (&reward, &spec.reward) {
        r.validate(&rs.config)?;
    }
    Ok(Prepared {
        spec,
        env,
        agent,
        reward,
        env_info,
        env_tools,
    })
}

/// A new run's id: 16 hex digits, unique in practice.
pub fn new_run_id() -> String {
    let mut h = blake3::Hasher::new();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    h.update(&now.as_nanos().to_le_bytes());
    h.update(&std::process::id().to_le_bytes());
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    h.update(&COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    h.finalize().to_hex()[..16].to_string()
}

impl Prepared {
    /// The run's spec as recorded: plugins with paths, content hashes, configs
    /// and limits.
    pub fn spec_json(&self) -> serde_json::Value {
        let plugin = |p: &Plugin, s: &PluginSpec| {
            serde_json::json!({
                "path": p.path, "hash": p.hash, "config": s.config, "limits": s.limits,
            })
        };
        let mut spec = serde_json::json!({
            "contract": crate::plugin::CONTRACT_VERSION,
            "env": plugin(&self.env, &self.spec.env),
            "agent": match (&self.agent, &self.spec.agent) {
                (PreparedAgent::Plugin(p), AgentSpec::Plugin(s)) => plugin(p, s),
                // `native` tells a replay to ask its resolver for the agent.
                (agent, spec) => serde_json::json!({
                    "path": agent.name(), "hash": agent.hash(), "config": spec.config(),
                    "native": true,
                }),
            },
            "reward": match (&self.reward, &self.spec.reward) {
                (Some(p), Some(s)) => plugin(p, s),
                _ => serde_json::Value::Null,
            },
            "env_info": self.env_info,
        });
        if let (Some(client), Some(obj)) = (&self.spec.models.client, spec.as_object_mut()) {
            obj.insert("models".into(), client.describe());
        }
        if !self.spec.step_delay.is_zero()
            && let Some(obj) = spec.as_object_mut()
        {
            obj.insert(
                "step_delay_ms".into(),
                (self.spec.step_delay.as_secs_f64() * 1e3).into(),
            );
        }
        spec
    }

    /// Runs every episode on `jobs` threads and records them.
    pub fn run(&self, progress: &Progress) -> Result<RunReport, RunError> {
        let seeds: Vec<u64> = (0..self.spec.episodes)
            .map(|i| episode_seed(self.spec.seed, i))
            .collect();
        let db = Db::open(&self.spec.db)?;
        let base = MemoryBase {
            agent: Arc::new(db.agent_memory()?),
            user: Arc::new(db.user_memory()?),
        };
        drop(db);
        let run_id = new_run_id();
        let record = RunRecord {
            id: run_id.clone(),
            seed: self.spec.seed,
            episodes: self.spec.episodes,
            jobs: self.spec.jobs as u64,
            spec: self.spec_json(),
            agent_base: None,
            fold_agent_memory: true,
            branch: None,
        };
        let recorder = Recorder::start(&self.spec.db, record, &seeds)?;
        let started = Instant::now();
        let next = AtomicU64::new(0);
        let jobs = self.spec.jobs.min(seeds.len()).max(1);
        std::thread::scope(|scope| {
            for j in 0..jobs {
                let mut writer = recorder.writer();
                let (next, seeds, base) = (&next, &seeds, &base);
                let spawned = std::thread::Builder::new()
                    .name(format!("ludus-worker-{j}"))
                    .spawn_scoped(scope, move || {
                        loop {
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            let Some(&seed) = seeds.get(i as usize) else {
                                break;
                            };
                            writer.start(i, seed);
                            let finish =
                                self.episode(seed, base.clone(), progress, &mut |frame, timing| {
                                    writer.push(i, &frame, timing);
                                });
                            writer.end(i, finish);
                            progress.episodes_done.fetch_add(1, Ordering::Relaxed);
                        }
                        // Dropping the writer sends its last batch.
                    });
                if let Err(e) = spawned {
                    tracing::error!("cannot start worker thread {j}: {e}");
                }
            }
        });
        let wall = started.elapsed();
        let episodes = recorder.finish()?;
        let env_steps = progress.steps.load(Ordering::Relaxed);
        Ok(RunReport {
            run_id,
            db: self.spec.db.clone(),
            episodes,
            wall,
            env_steps,
        })
    }

    /// Records one episode of run `run_id`, the one with `seed`, alone (as
    /// index 0) into this spec's database: what a queue worker does with a
    /// job before it moves the episode into the shared database. The
    /// episode's frames, and so its digest, are those `ludus run` records
    /// for the same seed, starting from `memory` (the run's memory when it
    /// was queued).
    pub fn run_one(&self, run_id: &str, seed: u64, memory: MemoryBase) -> Result<(), RunError> {
        let record = RunRecord {
            id: run_id.to_string(),
            seed: self.spec.seed,
            episodes: 1,
            jobs: 1,
            spec: self.spec_json(),
            agent_base: Some((*memory.agent).clone()),
            fold_agent_memory: false,
            branch: None,
        };
        let recorder = Recorder::start(&self.spec.db, record, &[seed])?;
        let mut writer = recorder.writer();
        writer.start(0, seed);
        let finish = self.episode(seed, memory, &Progress::default(), &mut |frame, timing| {
            writer.push(0, &frame, timing);
        });
        writer.end(0, finish);
        drop(writer);
        recorder.finish()?;
        Ok(())
    }

    /// Runs one episode, handing each frame to `sink` as it is made.
    pub(crate) fn episode(
        &self,
        seed: u64,
        memory: MemoryBase,
        progress: &Progress,
        sink: &mut dyn FnMut(Frame, Timing),
    ) -> EpisodeFinish {
        let mut stepper = match Stepper::start(self, seed, memory) {
            Ok(s) => s,
            Err(finish) => return *finish,
        };
        while !stepper.is_done() {
            if progress.cancel.load(Ordering::Relaxed) {
                stepper.interrupt();
                break;
            }
            let Some((frame, timing)) = stepper.step(None) else {
                break;
            };
            sink(frame, timing);
            progress.steps.fetch_add(1, Ordering::Relaxed);
            if !self.spec.step_delay.is_zero() {
                std::thread::sleep(self.spec.step_delay);
            }
        }
        stepper.finish()
    }
}

/// One episode advanced a frame at a time. `ludus run`'s workers, the
/// debugger's live mode and its replays and forks all step episodes through
/// this, so they produce the same frames from the same seed.
pub struct Stepper {
    env: EnvInstance,
    agent: StepAgent,
    reward: Option<RewardInstance>,
    info: EnvInfo,
    observation: Option<Observation>,
    last_reward: f32,
    /// Step index, return, success and, once the episode ended (by the env,
    /// the step limit, a crash or an interrupt), its outcome.
    tracker: EpisodeTracker,
    pending_logs: Vec<LogLine>,
    pending_writes: Vec<MemoryWrite>,
    finish: EpisodeFinish,
    /// Frames the episode may run without the env ending it, and the env's
    /// name for the message.
    frame_cap: (u64, String),
    /// The episode's model calls, shared with the agent and reward plugins.
    models: SharedModels,
    /// Whether model calls may go to a live endpoint, which needs the
    /// observation for `observation-image` parts.
    lend_observation: bool,
    /// Whether recorded model calls wait to be served in this frame.
    replaying: bool,
}

/// The agent an episode steps: a wasm instance or a native agent (with the
/// episode's memory kept by the host on its behalf).
enum StepAgent {
    Wasm(AgentInstance),
    Native {
        agent: Box<dyn NativeAgent>,
        memory: EpisodeMemory,
        name: String,
    },
}

/// Runs a native agent's call, turning an `Err` or a panic into a crash.
fn native_call<T>(
    name: &str,
    call: &str,
    f: impl FnOnce() -> Result<T, NativeAgentError>,
) -> Result<T, Crash> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(m)) => Err(Crash {
            message: format!("agent {name} failed in {call}: {m}"),
        }),
        Err(panic) => {
            let first = ludus_core::panic_message(panic.as_ref()).unwrap_or("(no message)");
            Err(Crash {
                message: format!("agent {name} panicked in {call}: {first}"),
            })
        }
    }
}

impl StepAgent {
    fn begin_episode(&mut self, env: &EnvInfo, task: &str, seed: u64) -> Result<(), Crash> {
        match self {
            StepAgent::Wasm(a) => a.begin_episode(env, task, seed),
            StepAgent::Native { agent, name, .. } => native_call(name, "begin-episode", || {
                agent.begin_episode(env, task, seed)
            }),
        }
    }

    fn act(&mut self, observation: &Observation, context: StepContext) -> Result<Action, Crash> {
        match self {
            StepAgent::Wasm(a) => a.act(observation, context),
            StepAgent::Native { agent, name, .. } => {
                native_call(name, "act", || agent.act(observation, context))
            }
        }
    }

    fn end_episode(&mut self, end: EpisodeEnd) -> Result<(), Crash> {
        match self {
            StepAgent::Wasm(a) => a.end_episode(end),
            StepAgent::Native { agent, name, .. } => {
                native_call(name, "end-episode", || agent.end_episode(&end))
            }
        }
    }

    fn take_logs(&mut self) -> Vec<LogLine> {
        match self {
            StepAgent::Wasm(a) => a.take_logs(),
            StepAgent::Native { .. } => Vec::new(),
        }
    }

    /// The agent's own memory writes (a native agent makes none).
    fn take_writes(&mut self) -> Vec<MemoryWrite> {
        match self {
            StepAgent::Wasm(a) => a.take_writes(),
            StepAgent::Native { .. } => Vec::new(),
        }
    }

    fn memory(&self) -> Option<&EpisodeMemory> {
        match self {
            StepAgent::Wasm(a) => a.memory(),
            StepAgent::Native { memory, .. } => Some(memory),
        }
    }

    fn memory_mut(&mut self) -> Option<&mut EpisodeMemory> {
        match self {
            StepAgent::Wasm(a) => a.memory_mut(),
            StepAgent::Native { memory, .. } => Some(memory),
        }
    }
}

fn empty_finish() -> EpisodeFinish {
    EpisodeFinish {
        outcome: Outcome::Crashed,
        return_: 0.0,
        length: 0,
        success: false,
        error: None,
        task: String::new(),
        reset_info: String::new(),
        final_observation: None,
        end_writes: Vec::new(),
    }
}

impl Stepper {
    /// Instantiates the plugins, resets the env and begins the agent's
    /// episode. A plugin that crashes on the way gives the crashed episode's
    /// ending instead.
    pub fn start(
        prepared: &Prepared,
        seed: u64,
        memory: MemoryBase,
    ) -> Result<Stepper, Box<EpisodeFinish>> {
        Stepper::start_replaying(prepared, seed, memory, Vec::new())
    }

    /// [`Stepper::start`] for a replay: `first_calls` are frame 0's recorded
    /// model calls, served to the calls the plugins make while starting
    /// (`init`, `begin-episode`, which are recorded with frame 0) and then
    /// to frame 0's own.
    pub fn start_replaying(
        prepared: &Prepared,
        seed: u64,
        memory: MemoryBase,
        first_calls: Vec<ModelCall>,
    ) -> Result<Stepper, Box<EpisodeFinish>> {
        let mut finish = empty_finish();
        let crashed = |mut finish: EpisodeFinish, c: Crash| {
            finish.error = Some(c.message);
            Box::new(finish)
        };
        let config_err = |role: &str, m: crate::plugin::Refusal| Crash {
            message: format!("{role} rejected its config: {m}"),
        };
        let spec = &prepared.spec;
        let budget = |l: Option<&crate::plugin::Limits>| Budget {
            tokens: l.map_or(u64::MAX, |l| l.tokens),
            calls: l.map_or(u64::MAX, |l| l.model_calls),
        };
        let models: SharedModels = Arc::new(std::sync::Mutex::new(EpisodeModels::new(
            spec.models.clone(),
            budget(spec.agent.plugin().map(|p| &p.limits)),
            budget(spec.reward.as_ref().map(|p| &p.limits)),
            seed,
        )));
        let replaying = !first_calls.is_empty();
        if replaying && let Ok(mut m) = models.lock() {
            m.replay_frame(first_calls);
        }
        let mut env = match prepared.env.env(derived_seed(seed, 0)) {
            Ok(e) => e,
            Err(c) => return Err(crashed(finish, c)),
        };
        let info = match env.init(&spec.env.config) {
            Ok(Ok(i)) => i,
            Ok(Err(m)) => return Err(crashed(finish, config_err("env", m))),
            Err(c) => return Err(crashed(finish, c)),
        };
        if !prepared.env_tools.is_empty()
            && let Ok(mut m) = models.lock()
        {
            m.env_tools = prepared.env_tools.clone();
        }
        let mut agent = match &prepared.agent {
            PreparedAgent::Plugin(p) => {
                let mut agent = match p.agent(derived_seed(seed, 1), EpisodeMemory::new(memory)) {
                    Ok(a) => a,
                    Err(c) => return Err(crashed(finish, c)),
                };
                agent.set_models(models.clone());
                match agent.init(&spec.agent.config()) {
                    Ok(Ok(_)) => {}
                    Ok(Err(m)) => return Err(crashed(finish, config_err("agent", m))),
                    Err(c) => return Err(crashed(finish, c)),
                }
                StepAgent::Wasm(agent)
            }
            PreparedAgent::Native(f) => {
                let name = f.source();
                match native_call(&name, "make", || f.make()) {
                    Ok(agent) => StepAgent::Native {
                        agent,
                        memory: EpisodeMemory::new(memory),
                        name,
                    },
                    Err(c) => return Err(crashed(finish, c)),
                }
            }
        };
        let reward = match (&prepared.reward, &spec.reward) {
            (Some(p), Some(s)) => {
                let mut r = match p.reward(derived_seed(seed, 2)) {
                    Ok(r) => r,
                    Err(c) => return Err(crashed(finish, c)),
                };
                r.set_models(models.clone());
                match r.init(&s.config) {
                    Ok(Ok(_)) => {}
                    Ok(Err(m)) => return Err(crashed(finish, config_err("reward", m))),
                    Err(c) => return Err(crashed(finish, c)),
                }
                Some(r)
            }
            _ => None,
        };
        let reset = match env.reset(seed) {
            Ok(r) => r,
            Err(c) => return Err(crashed(finish, c)),
        };
        finish.task = reset.task.clone();
        finish.reset_info = reset.info.clone();
        let mut pending_logs: Vec<LogLine> = env.take_logs();
        if let Err(c) = agent.begin_episode(&info, &reset.task, derived_seed(seed, 3)) {
            finish.final_observation = Some(reset.observation);
            return Err(crashed(finish, c));
        }
        pending_logs.extend(agent.take_logs());
        let pending_writes = agent.take_writes();
        Ok(Stepper {
            env,
            agent,
            reward,
            observation: Some(reset.observation),
            last_reward: 0.0,
            tracker: EpisodeTracker::new(info.max_steps),
            info,
            pending_logs,
            pending_writes,
            finish,
            frame_cap: (spec.env.limits.frames, prepared.env.name.clone()),
            models,
            lend_observation: spec.models.client.is_some(),
            replaying,
        })
    }

    /// The environment's description.
    pub fn env_info(&self) -> &EnvInfo {
        &self.info
    }

    /// The task the environment set at reset.
    pub fn task(&self) -> &str {
        &self.finish.task
    }

    /// The index of the next frame.
    pub fn step_index(&self) -> u32 {
        self.tracker.step()
    }

    /// The observation the agent acts on next.
    pub fn observation(&self) -> Option<&Observation> {
        self.observation.as_ref()
    }

    /// Whether the episode has ended.
    pub fn is_done(&self) -> bool {
        self.tracker.outcome().is_some()
    }

    /// The agent's execution memory as it sees it now.
    pub fn memory(&self) -> BTreeMap<String, String> {
        self.agent
            .memory()
            .map(EpisodeMemory::snapshot)
            .unwrap_or_default()
    }

    /// Sets (`Some`) or deletes (`None`) a memory path as the user, before the
    /// next frame: any scope, `/user` included. The edit is recorded with the
    /// next frame's memory writes.
    pub fn edit_memory(&mut self, path: &str, value: Option<&str>) -> Result<(), MemoryError> {
        let Some(memory) = self.agent.memory_mut() else {
            return Ok(());
        };
        memory.edit(path, value.map(str::to_string))?;
        self.pending_writes.push(MemoryWrite {
            path: path.to_string(),
            value: value.map(str::to_string),
        });
        Ok(())
    }

    /// Stops the episode as `interrupted`.
    pub fn interrupt(&mut self) {
        self.tracker.end(Outcome::Interrupted);
    }

    /// Plays one frame: the agent acts (its action replaced by `replace` when
    /// given), the env steps, the reward plugin scores. `None` when the
    /// episode had already ended or a plugin crashed (see [`Stepper::finish`]).
    pub fn step(&mut self, replace: Option<Action>) -> Option<(Frame, Timing)> {
        if self.is_done() {
            return None;
        }
        match self.step_inner(replace) {
            Ok(frame) => Some(frame),
            Err(crash) => {
                self.finish.error = Some(crash.message);
                self.tracker.end(Outcome::Crashed);
                None
            }
        }
    }

    fn step_inner(&mut self, replace: Option<Action>) -> Result<(Frame, Timing), Crash> {
        let step = self.tracker.step();
        if u64::from(step) >= self.frame_cap.0 {
            return Err(Crash {
                message: format!(
                    "env plugin {} crashed in `step`: over the frame limit: {} frames without ending the episode (raise it with --limit env.frames=N)",
                    self.frame_cap.1, self.frame_cap.0
                ),
            });
        }
        let Some(observation) = self.observation.take() else {
            return Err(Crash {
                message: "the episode has no observation to act on".into(),
            });
        };
        if self.lend_observation {
            self.lend(observation.clone());
        }
        let t0 = Stamp::now();
        let action = match self.agent.act(
            &observation,
            StepContext {
                step,
                last_reward: self.last_reward,
            },
        ) {
            Ok(a) => replace.unwrap_or(a),
            Err(c) => {
                self.finish.final_observation = Some(observation);
                return Err(c);
            }
        };
        let t1 = Stamp::now();
        let result = match self.env.step(&action) {
            Ok(r) => r,
            Err(c) => {
                self.finish.final_observation = Some(observation);
                return Err(c);
            }
        };
        let t2 = Stamp::now();
        let flags = self.tracker.flags(result.terminated, result.truncated);
        let (terminated, truncated) = (flags.terminated, flags.truncated);
        let (recorded, success, note, next, taken, observation_prev, info_text);
        match self.reward.as_mut() {
            Some(r) => {
                let transition = Transition {
                    step,
                    previous: observation,
                    action,
                    next: result.observation,
                    env_reward: result.reward,
                    terminated,
                    truncated,
                    info: result.info,
                };
                if self.lend_observation
                    && let Ok(mut m) = self.models.lock()
                {
                    m.set_observation(transition.next.clone());
                }
                let scored = match r.score(&transition) {
                    Ok(s) => s,
                    Err(c) => {
                        self.finish.final_observation = Some(transition.next);
                        return Err(c);
                    }
                };
                recorded = scored.reward;
                success = scored.success;
                note = scored.note;
                next = transition.next;
                taken = transition.action;
                observation_prev = transition.previous;
                info_text = transition.info;
            }
            None => {
                recorded = result.reward;
                success = None;
                note = None;
                next = result.observation;
                taken = action;
                observation_prev = observation;
                info_text = result.info;
            }
        }
        let t3 = Stamp::now();
        self.pending_logs.extend(self.agent.take_logs());
        self.pending_logs.extend(self.env.take_logs());
        if let Some(r) = self.reward.as_mut() {
            self.pending_logs.extend(r.take_logs());
        }
        self.pending_writes.extend(self.agent.take_writes());
        let model_calls = self.take_model_calls();
        self.tracker.record(flags, recorded, success, &info_text);
        let frame = Frame {
            step,
            observation: observation_prev,
            action: taken,
            env_reward: result.reward,
            reward: recorded,
            terminated,
            truncated,
            info: info_text,
            success,
            note,
            logs: std::mem::take(&mut self.pending_logs),
            memory_writes: std::mem::take(&mut self.pending_writes),
            model_calls,
        };
        let timing = Timing {
            act_ns: t0.ns_until(t1),
            step_ns: t1.ns_until(t2),
            score_ns: t2.ns_until(t3),
        };
        self.observation = Some(next);
        self.last_reward = recorded;
        Ok((frame, timing))
    }

    /// Lends the observation the plugins see to the episode's model access.
    fn lend(&mut self, observation: Observation) {
        if let Ok(mut m) = self.models.lock() {
            m.set_observation(observation);
        }
    }

    /// The model calls made in the frame just played (none without a lock
    /// when no plugin called a model).
    fn take_model_calls(&mut self) -> Vec<ModelCall> {
        let agent = match &mut self.agent {
            StepAgent::Wasm(a) => a.take_called_models(),
            StepAgent::Native { .. } => false,
        };
        let reward = self.reward.as_mut().is_some_and(|r| r.take_called_models());
        if !(agent || reward || self.replaying || self.lend_observation) {
            return Vec::new();
        }
        let Ok(mut m) = self.models.lock() else {
            return Vec::new();
        };
        if self.lend_observation {
            m.take_observation();
        }
        if agent || reward || std::mem::take(&mut self.replaying) {
            m.take_calls()
        } else {
            Vec::new()
        }
    }

    /// Recorded model calls to serve, in order, while playing the next
    /// frame: a replay. A plugin's call that asks for exactly what the
    /// recorded one asked gets the recorded answer without any endpoint
    /// being contacted; the first that differs goes to the live endpoint
    /// (see [`Stepper::model_mismatch`]).
    pub fn replay_model_calls(&mut self, calls: Vec<ModelCall>) {
        if calls.is_empty() {
            return;
        }
        self.replaying = true;
        if let Ok(mut m) = self.models.lock() {
            m.replay_frame(calls);
        }
    }

    /// Answers for the next frame's model calls by their index in it,
    /// instead of any endpoint: "what if the model had said this".
    pub fn edit_model_responses(&mut self, edits: std::collections::HashMap<usize, String>) {
        if edits.is_empty() {
            return;
        }
        if let Ok(mut m) = self.models.lock() {
            m.edit_frame(edits);
        }
    }

    /// The first replayed model call whose request differed from the
    /// recorded one: its index in its frame, and what differed.
    pub fn model_mismatch(&mut self) -> Option<(usize, String)> {
        self.models.lock().ok()?.mismatch.take()
    }

    /// Ends the episode: tells the agent how it went (when the env ended it)
    /// and returns the ending to record.
    pub fn finish(mut self) -> EpisodeFinish {
        let outcome = self.tracker.outcome().unwrap_or(Outcome::Interrupted);
        let mut finish = std::mem::replace(&mut self.finish, empty_finish());
        finish.outcome = outcome;
        finish.return_ = self.tracker.return_();
        finish.length = u64::from(self.tracker.step());
        if finish.final_observation.is_none() {
            finish.final_observation = self.observation.take();
        }
        if !matches!(outcome, Outcome::Terminated | Outcome::Truncated) {
            return finish;
        }
        finish.success = self.tracker.success();
        let end = EpisodeEnd {
            steps: self.tracker.step(),
            return_: finish.return_,
            success: finish.success,
            terminated: outcome == Outcome::Terminated,
            truncated: outcome == Outcome::Truncated,
        };
        let ended = self.agent.end_episode(end);
        finish.end_writes = self.agent.take_writes();
        if let Err(c) = ended {
            finish.outcome = Outcome::Crashed;
            finish.error = Some(c.message);
        }
        finish
    }
}
