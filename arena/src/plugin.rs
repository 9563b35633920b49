//! Loading plugins (with clear errors), and calling them inside their limits.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use wasmtime::component::{InstancePre, types::ComponentItem};
use wasmtime::{Store, Trap, WasmBacktrace};

use crate::contract::exports::ludus::plugin::{
    agent_plugin, env_plugin, env_tools, env_vector, env_vector_packed, reward_plugin,
};
use crate::engine::{self, CompileSource, EPOCH_TICK};
use crate::host::{PluginState, linker, new_store};
use crate::memory::EpisodeMemory;
use crate::model::{
    Action, AgentInfo, BatchResult, EnvInfo, EpisodeEnd, LogLine, MemoryWrite, Observation,
    ResetResult, RewardInfo, Role, ScoreResult, StepContext, StepResult, Transition, Value,
};

/// The contract version this host implements.
pub const CONTRACT_VERSION: &str = "0.1.3";
const CONTRACT_PACKAGE: &str = "ludus:plugin";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PluginKind {
    Env,
    Agent,
    Reward,
}

impl PluginKind {
    fn interface(self) -> &'static str {
        match self {
            PluginKind::Env => "env-plugin",
            PluginKind::Agent => "agent-plugin",
            PluginKind::Reward => "reward-plugin",
        }
    }
    fn role(self) -> Role {
        match self {
            PluginKind::Env => Role::Env,
            PluginKind::Agent => Role::Agent,
            PluginKind::Reward => Role::Reward,
        }
    }
}

impl fmt::Display for PluginKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PluginKind::Env => "env",
            PluginKind::Agent => "agent",
            PluginKind::Reward => "reward",
        })
    }
}

/// Per-plugin limits. Fuel is the deterministic compute budget of one call
/// (a runaway plugin traps at the same step on every replay); the timeout is a
/// wall-clock backstop; the memory cap bounds the plugin's linear memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    pub fuel: u64,
    pub memory_bytes: u64,
    pub timeout_ms: u64,
    /// Execution-memory writes and deletes an agent may make in one call.
    #[serde(default = "default_memory_writes")]
    pub memory_writes: u64,
    /// Frames one episode may run without the env ending it (an env whose
    /// `max-steps` is 0 and which never terminates would run until killed).
    #[serde(default = "default_frames")]
    pub frames: u64,
    /// Model tokens (prompt and completion) the plugin may use in one
    /// episode; a call once they are spent is refused as over budget.
    #[serde(default = "unlimited")]
    pub tokens: u64,
    /// Model calls the plugin may make in one episode.
    #[serde(default = "unlimited")]
    pub model_calls: u64,
    /// Execution-memory writes and deletes an agent may make in one
    /// episode, all its calls together.
    #[serde(default = "default_episode_memory_writes")]
    pub episode_memory_writes: u64,
    /// Bytes one call may hand the host: its result (an observation, an
    /// action) or the arguments of one call it makes into the host.
    #[serde(default = "default_transfer_bytes")]
    pub transfer_bytes: u64,
}

fn unlimited() -> u64 {
    u64::MAX
}

fn default_memory_writes() -> u64 {
    Limits::DEFAULT.memory_writes
}

fn default_frames() -> u64 {
    Limits::DEFAULT.frames
}

fn default_episode_memory_writes() -> u64 {
    Limits::DEFAULT.episode_memory_writes
}

fn default_transfer_bytes() -> u64 {
    Limits::DEFAULT.transfer_bytes
}

impl Limits {
    /// Defaults: 1e9 fuel per call (about a second of compute), 512 MiB of
    /// linear memory in all (Python and JS plugins need tens of MiB), 10 s
    /// per call, 10,000 memory writes per call and 100,000 per episode,
    /// 10,000,000 frames per episode, 128 MiB handed to the host per call
    /// (what wasmtime allows by default), no limit on model tokens and calls.
    pub const DEFAULT: Limits = Limits {
        fuel: 1_000_000_000,
        memory_bytes: 512 << 20,
        timeout_ms: 10_000,
        memory_writes: 10_000,
        frames: 10_000_000,
        tokens: u64::MAX,
        model_calls: u64::MAX,
        episode_memory_writes: 100_000,
        transfer_bytes: 128 << 20,
    };

    /// Applies one `KEY=VALUE` override (`fuel`, `memory-mb`, `timeout-ms`,
    /// `memory-writes`, `episode-memory-writes`, `frames`, `transfer-mb`,
    /// `tokens`, `model-calls`).
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), LimitError> {
        let n: u64 = value
            .replace('_', "")
            .parse()
            .map_err(|_| LimitError::NotANumber {
                key: key.to_string(),
                value: value.to_string(),
            })?;
        if n == 0 {
            return Err(LimitError::Zero(key.to_string()));
        }
        match key {
            "fuel" => self.fuel = n,
            "memory-mb" => self.memory_bytes = n.saturating_mul(1 << 20),
            "timeout-ms" => self.timeout_ms = n,
            "memory-writes" => self.memory_writes = n,
            "frames" => self.frames = n,
            "episode-memory-writes" => self.episode_memory_writes = n,
            "transfer-mb" => self.transfer_bytes = n.saturating_mul(1 << 20),
            "tokens" => self.tokens = n,
            "model-calls" => self.model_calls = n,
            _ => return Err(LimitError::Unknown(key.to_string())),
        }
        Ok(())
    }
}

/// A `--limit KEY=VALUE` that cannot be applied.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error("limit `{key}`: `{value}` is not a whole number")]
    NotANumber { key: String, value: String },
    #[error("limit `{0}` must be greater than 0")]
    Zero(String),
    #[error(
        "unknown limit `{0}` (known: fuel, memory-mb, timeout-ms, memory-writes, episode-memory-writes, frames, transfer-mb, tokens, model-calls)"
    )]
    Unknown(String),
}

/// Why a plugin could not be loaded. Each message names the file, what is
/// wrong, and what to do.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot load plugin {path}: file not found")]
    NotFound { path: PathBuf },
    #[error("cannot load plugin {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot load plugin {path}: not a WebAssembly file")]
    NotWasm { path: PathBuf },
    #[error(
        "cannot load plugin {path}: it is a core module, not a component (build it with `cargo build --target wasm32-wasip2 --release`, without RUSTFLAGS that change the linker)"
    )]
    CoreModule { path: PathBuf },
    #[error("cannot load plugin {path}: it is {found} plugin, expected {expected} plugin")]
    WrongKind {
        path: PathBuf,
        expected: String,
        found: String,
    },
    #[error(
        "cannot load plugin {path}: it was built for contract {CONTRACT_PACKAGE}@{found}, this ludus implements @{CONTRACT_VERSION} (rebuild the plugin against ludus-sdk {CONTRACT_VERSION}, or use a ludus that supports {found})"
    )]
    WrongVersion { path: PathBuf, found: String },
    #[error(
        "cannot load plugin {path}: it exports none of the ludus plugin interfaces (it exports: {exports}); build it with ludus-sdk"
    )]
    NotLudus { path: PathBuf, exports: String },
    #[error("cannot load plugin {path}: invalid component: {message}")]
    Compile { path: PathBuf, message: String },
    #[error(
        "cannot load plugin {path}: it imports something this host does not provide: {message}"
    )]
    Link { path: PathBuf, message: String },
    #[error("plugin {path} rejected its config `{config}`: {message}")]
    Config {
        path: PathBuf,
        config: String,
        message: String,
    },
    #[error("plugin {path} crashed while starting: {message}")]
    Crashed { path: PathBuf, message: String },
}

enum Indices {
    /// An env, its `env-vector` export where it has one (contract 0.1.1 and
    /// later; 0.1.0 plugins have none), and its `env-vector-packed` (0.1.2).
    Env(
        env_plugin::GuestIndices,
        Option<env_vector::GuestIndices>,
        Option<env_vector_packed::GuestIndices>,
        Option<env_tools::GuestIndices>,
    ),
    Agent(agent_plugin::GuestIndices),
    Reward(reward_plugin::GuestIndices),
}

/// A loaded, validated, pre-linked plugin. Cheap to share between threads;
/// every episode gets fresh instances from it.
pub struct Plugin {
    pub kind: PluginKind,
    pub path: PathBuf,
    /// The file name, for messages.
    pub name: String,
    /// blake3 of the file's bytes, hex.
    pub hash: String,
    pub limits: Limits,
    /// Whether this load compiled the plugin or took it from the cache.
    pub compiled: bool,
    pre: InstancePre<PluginState>,
    indices: Indices,
}

impl fmt::Debug for Plugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Plugin")
            .field("kind", &self.kind)
            .field("path", &self.path)
            .field("hash", &self.hash)
            .finish()
    }
}

/// Component binary header: `\0asm` then the layer/version word.
fn wasm_layer(bytes: &[u8]) -> Option<bool> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return None;
    }
    // Core modules: version 1, layer 0. Components: layer 1.
    Some(bytes[6..8] == [1, 0])
}

impl Plugin {
    /// Loads the plugin at `path`, which must be a component of the given kind.
    pub fn load(path: &Path, kind: PluginKind, limits: Limits) -> Result<Arc<Plugin>, LoadError> {
        let bytes = std::fs::read(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => LoadError::NotFound {
                path: path.to_path_buf(),
            },
            _ => LoadError::Io {
                path: path.to_path_buf(),
                source: e,
            },
        })?;
        match wasm_layer(&bytes) {
            None => {
                return Err(LoadError::NotWasm {
                    path: path.to_path_buf(),
                });
            }
            Some(false) => {
                return Err(LoadError::CoreModule {
                    path: path.to_path_buf(),
                });
            }
            Some(true) => {}
        }
        let hash = blake3::hash(&bytes).to_hex().to_string();
        let (component, source) =
            engine::compile(&bytes, &hash, path).map_err(|e| LoadError::Compile {
                path: path.to_path_buf(),
                message: format!("{e:#}"),
            })?;
        check_exports(path, &component, kind)?;
        let engine = engine::engine();
        let linker = linker(engine).map_err(|e| LoadError::Link {
            path: path.to_path_buf(),
            message: format!("{e:#}"),
        })?;
        let pre = linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::Link {
                path: path.to_path_buf(),
                message: format!("{e:#}"),
            })?;
        let link_err = |e: wasmtime::Error| LoadError::Link {
            path: path.to_path_buf(),
            message: format!("{e:#}"),
        };
        let indices = match kind {
            PluginKind::Env => Indices::Env(
                env_plugin::GuestIndices::new(&pre).map_err(link_err)?,
                env_vector::GuestIndices::new(&pre).ok(),
                env_vector_packed::GuestIndices::new(&pre).ok(),
                env_tools::GuestIndices::new(&pre).ok(),
            ),
            PluginKind::Agent => {
                Indices::Agent(agent_plugin::GuestIndices::new(&pre).map_err(link_err)?)
            }
            PluginKind::Reward => {
                Indices::Reward(reward_plugin::GuestIndices::new(&pre).map_err(link_err)?)
            }
        };
        let name = path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        Ok(Arc::new(Plugin {
            kind,
            path: path.to_path_buf(),
            name,
            hash,
            limits,
            compiled: source == CompileSource::Compiled,
            pre,
            indices,
        }))
    }

    fn sandbox(
        &self,
        seed: u64,
        memory: Option<EpisodeMemory>,
    ) -> Result<(Store<PluginState>, wasmtime::component::Instance), Crash> {
        let state = PluginState::new(
            self.kind.role(),
            seed,
            self.limits.memory_bytes as usize,
            memory,
        )
        .with_write_caps(self.limits.memory_writes, self.limits.episode_memory_writes);
        let mut store = new_store(engine::engine(), state);
        arm(&mut store, &self.limits);
        let instance = self
            .pre
            .instantiate(&mut store)
            .map_err(|e| self.crash("instantiate", e, &store))?;
        Ok((store, instance))
    }

    fn crash(&self, call: &str, error: wasmtime::Error, store: &Store<PluginState>) -> Crash {
        Crash::new(self, call, error, store.data())
    }

    /// A fresh environment instance.
    pub fn env(self: &Arc<Self>, seed: u64) -> Result<EnvInstance, Crash> {
        let Indices::Env(ix, vector_ix, packed_ix, tools_ix) = &self.indices else {
            unreachable_kind(self, PluginKind::Env)
        };
        let (mut store, instance) = self.sandbox(seed, None)?;
        let guest = ix
            .load(&mut store, &instance)
            .map_err(|e| self.crash("load", e, &store))?;
        // An export of another shape (a future contract's) is ignored: the
        // plugin still works through `step` and `reset`.
        let vector = vector_ix
            .as_ref()
            .and_then(|ix| ix.load(&mut store, &instance).ok());
        let packed = packed_ix
            .as_ref()
            .and_then(|ix| ix.load(&mut store, &instance).ok());
        let tools = tools_ix
            .as_ref()
            .and_then(|ix| ix.load(&mut store, &instance).ok());
        Ok(EnvInstance {
            sandbox: Sandbox {
                plugin: self.clone(),
                store,
            },
            guest,
            vector,
            packed,
            tools,
        })
    }

    /// A fresh agent instance with its episode's execution memory.
    pub fn agent(
        self: &Arc<Self>,
        seed: u64,
        memory: EpisodeMemory,
    ) -> Result<AgentInstance, Crash> {
        let Indices::Agent(ix) = &self.indices else {
            unreachable_kind(self, PluginKind::Agent)
        };
        let (mut store, instance) = self.sandbox(seed, Some(memory))?;
        let guest = ix
            .load(&mut store, &instance)
            .map_err(|e| self.crash("load", e, &store))?;
        Ok(AgentInstance {
            sandbox: Sandbox {
                plugin: self.clone(),
                store,
            },
            guest,
        })
    }

    /// A fresh reward instance.
    pub fn reward(self: &Arc<Self>, seed: u64) -> Result<RewardInstance, Crash> {
        let Indices::Reward(ix) = &self.indices else {
            unreachable_kind(self, PluginKind::Reward)
        };
        let (mut store, instance) = self.sandbox(seed, None)?;
        let guest = ix
            .load(&mut store, &instance)
            .map_err(|e| self.crash("load", e, &store))?;
        Ok(RewardInstance {
            sandbox: Sandbox {
                plugin: self.clone(),
                store,
            },
            guest,
        })
    }

    /// Instantiates once and calls `init(config)`, turning a refusal into a
    /// clear load error. Returns the plugin's self-description.
    pub fn describe(self: &Arc<Self>, config: &str) -> Result<Description, LoadError> {
        let crashed = |c: Crash| LoadError::Crashed {
            path: self.path.clone(),
            message: c.message,
        };
        let rejected = |m: Refusal| LoadError::Config {
            path: self.path.clone(),
            config: config.to_string(),
            message: m.0,
        };
        Ok(match self.kind {
            PluginKind::Env => Description::Env(self.describe_env(config)?.0),
            PluginKind::Agent => {
                let mut a = self
                    .agent(0, EpisodeMemory::new(Default::default()))
                    .map_err(crashed)?;
                Description::Agent(a.init(config).map_err(crashed)?.map_err(rejected)?)
            }
            PluginKind::Reward => Description::Reward(
                self.reward(0)
                    .map_err(crashed)?
                    .init(config)
                    .map_err(crashed)?
                    .map_err(rejected)?,
            ),
        })
    }

    /// An env plugin's self-description and the tools it offers
    /// (`env-tools`, contract 0.1.3; none where it does not export it),
    /// from one instance after `init(config)`.
    pub fn describe_env(
        self: &Arc<Self>,
        config: &str,
    ) -> Result<(EnvInfo, Vec<crate::model::Tool>), LoadError> {
        let crashed = |c: Crash| LoadError::Crashed {
            path: self.path.clone(),
            message: c.message,
        };
        let mut env = self.env(0).map_err(crashed)?;
        let info = env
            .init(config)
            .map_err(crashed)?
            .map_err(|m| LoadError::Config {
                path: self.path.clone(),
                config: config.to_string(),
                message: m.0,
            })?;
        let tools = env.tools().map_err(crashed)?;
        Ok((info, tools))
    }

    /// [`Plugin::describe`], as JSON for printing.
    pub fn validate(self: &Arc<Self>, config: &str) -> Result<serde_json::Value, LoadError> {
        Ok(self.describe(config)?.to_json())
    }
}

/// What a plugin's `init` says about itself.
#[derive(Clone, Debug, PartialEq)]
pub enum Description {
    Env(EnvInfo),
    Agent(AgentInfo),
    Reward(RewardInfo),
}

impl Description {
    /// As JSON, for people and scripts to read. JSON has no NaN or infinity,
    /// so such a bound shows as `null`: read the typed value, never this,
    /// back into a description.
    pub fn to_json(&self) -> serde_json::Value {
        let v = match self {
            Description::Env(i) => serde_json::to_value(i),
            Description::Agent(i) => serde_json::to_value(i),
            Description::Reward(i) => serde_json::to_value(i),
        };
        v.unwrap_or(serde_json::Value::Null)
    }
}

fn unreachable_kind(plugin: &Plugin, wanted: PluginKind) -> ! {
    // `load` fixed the kind; asking a plugin for another kind is a host bug.
    panic!(
        "plugin {} is a {} plugin, not {wanted}",
        plugin.name, plugin.kind
    )
}

fn check_exports(
    path: &Path,
    component: &wasmtime::component::Component,
    kind: PluginKind,
) -> Result<(), LoadError> {
    let engine = engine::engine();
    let ty = component.component_type();
    let names: Vec<String> = ty
        .exports(engine)
        .filter(|(_, item)| matches!(item.ty, ComponentItem::ComponentInstance(_)))
        .map(|(name, _)| name.to_string())
        .collect();
    let wanted = format!("{CONTRACT_PACKAGE}/{}", kind.interface());
    for name in &names {
        let Some((iface, version)) = name.split_once('@') else {
            continue;
        };
        if iface == wanted {
            return if version == CONTRACT_VERSION || compatible(version) {
                Ok(())
            } else {
                Err(LoadError::WrongVersion {
                    path: path.to_path_buf(),
                    found: version.to_string(),
                })
            };
        }
    }
    for other in [PluginKind::Env, PluginKind::Agent, PluginKind::Reward] {
        let iface = format!("{CONTRACT_PACKAGE}/{}@", other.interface());
        if names.iter().any(|n| n.starts_with(&iface)) {
            let article = |k: PluginKind| {
                if k == PluginKind::Reward {
                    format!("a {k}")
                } else {
                    format!("an {k}")
                }
            };
            return Err(LoadError::WrongKind {
                path: path.to_path_buf(),
                expected: article(kind),
                found: article(other),
            });
        }
    }
    Err(LoadError::NotLudus {
        path: path.to_path_buf(),
        exports: if names.is_empty() {
            "nothing".into()
        } else {
            names.join(", ")
        },
    })
}

/// Versions whose interfaces this host can call: the same 0.minor line. Within
/// it a release only adds interfaces (0.1.1 added `env-vector`, 0.1.2
/// `env-vector-packed`), so an older plugin's exports are found under the
/// host's names (wasmtime matches them as semver-compatible) and the
/// additions are looked up as optional.
fn compatible(version: &str) -> bool {
    let ours: Vec<&str> = CONTRACT_VERSION.split('.').collect();
    let theirs: Vec<&str> = version.split('.').collect();
    theirs.len() == 3
        && theirs[0] == ours[0]
        && theirs[1] == ours[1]
        && theirs[2].parse::<u32>().is_ok()
}

/// Re-arms the budget and the deadline: both are per call.
fn arm(store: &mut Store<PluginState>, limits: &Limits) {
    // Fuel is on for every store of this engine, so this cannot fail.
    let _ = store.set_fuel(limits.fuel);
    store.data_mut().excused = std::time::Duration::ZERO;
    store.data_mut().calls_this_call = 0;
    // What wasmtime lets a call hand the host. Twice the limit, so that an
    // observation between one and two limits still arrives and is reported
    // part by part (`EnvInstance::check`); beyond that the copy stops.
    store.set_hostcall_fuel(
        usize::try_from(limits.transfer_bytes.saturating_mul(2)).unwrap_or(usize::MAX),
    );
    let ticks = limits
        .timeout_ms
        .div_ceil(EPOCH_TICK.as_millis() as u64)
        .max(1);
    store.set_epoch_deadline(ticks);
}

/// The bytes an observation part's value holds, as the host receives it.
fn part_bytes(value: &Value) -> u64 {
    let n = match value {
        Value::Discrete(_) => 4,
        Value::Vector(v) => v.len() * 4,
        Value::Image(img) => img.pixels.len() + 12,
        Value::Text(t) => t.len(),
        Value::Tree(elements) => elements
            .iter()
            .map(|e| e.role.len() + e.name.len() + e.value.len() + 40)
            .sum(),
    };
    n as u64
}

/// A byte count as MiB with one decimal.
fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1u32 << 20))
}

/// The fast path's action: up to 8 values, padded with zeros.
fn values8(action: &[f32]) -> Option<env_vector::Values8> {
    if action.len() > 8 {
        return None;
    }
    let v = |i: usize| action.get(i).copied().unwrap_or(0.0);
    Some((v(0), v(1), v(2), v(3), v(4), v(5), v(6), v(7)))
}

/// Decodes a `packed-step` (its layout is in the WIT); `None` where bit 63
/// says the environment declined.
fn unpack(words: env_vector_packed::PackedStep) -> Option<VectorStep> {
    let (w0, w1, w2, w3, w4) = words;
    if w4 >> 63 != 0 {
        return None;
    }
    let lo = |w: u64| f32::from_bits(w as u32);
    let hi = |w: u64| f32::from_bits((w >> 32) as u32);
    let flags = (w4 >> 32) as u8;
    Some(VectorStep {
        observation: [
            lo(w0),
            hi(w0),
            lo(w1),
            hi(w1),
            lo(w2),
            hi(w2),
            lo(w3),
            hi(w3),
        ],
        reward: lo(w4),
        terminated: flags & 1 != 0,
        truncated: flags & 2 != 0,
    })
}

/// A plugin's own answer that it will not do what was asked: its `init`
/// rejected the config, or a batch call declined. The message is the
/// plugin's.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refusal(pub String);

/// A plugin that trapped, ran out of budget or memory, or panicked. This is an
/// episode outcome, not a host error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Crash {
    pub message: String,
}

impl fmt::Display for Crash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl Crash {
    fn new(plugin: &Plugin, call: &str, error: wasmtime::Error, state: &PluginState) -> Crash {
        let limits = &plugin.limits;
        let role = plugin.kind;
        let cause = if let Some(limit) = &state.over_limit {
            limit.clone()
        } else if let Some(bytes) = state.memory_refused {
            let cap = format!(
                "its linear memories would take {} MiB in all, the cap is {} MiB (raise it with --limit {role}.memory-mb=N)",
                bytes >> 20,
                limits.memory_bytes >> 20
            );
            // What ended the call: the plugin's own panic when it had one
            // (it may have handled the refusal and failed later), else the cap.
            match panic_message(&state.stderr_text()) {
                Some(panic) => format!("{panic}; before it, memory cap exceeded: {cap}"),
                None => format!("memory cap exceeded: {cap}"),
            }
        } else {
            match error.downcast_ref::<Trap>() {
                None if is_transfer_overflow(&error) => format!(
                    "it handed the host more than {} MiB in one call, over the transfer limit of {} MiB (make the data smaller, or raise it with --limit {role}.transfer-mb=N)",
                    limits.transfer_bytes.saturating_mul(2) >> 20,
                    limits.transfer_bytes >> 20
                ),
                Some(Trap::OutOfFuel) => format!(
                    "compute budget exhausted: {} fuel in one call (raise it with --limit {role}.fuel=N)",
                    limits.fuel
                ),
                Some(Trap::Interrupt) => format!(
                    "wall-clock deadline exceeded: {} ms in one call (raise it with --limit {role}.timeout-ms=N)",
                    limits.timeout_ms
                ),
                Some(Trap::StackOverflow) => "stack overflow (unbounded recursion?)".to_string(),
                Some(trap) => trap.to_string(),
                None => format!("{error}"),
            }
        };
        let mut message = format!("{role} plugin {} crashed in `{call}`: {cause}", plugin.name);
        let stderr = state.stderr_text();
        if !stderr.is_empty() {
            let tail: Vec<&str> = stderr.lines().rev().take(6).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            message.push_str(&format!("; stderr: {}", tail.join(" | ")));
        }
        if let Some(bt) = error.downcast_ref::<WasmBacktrace>() {
            let frames = backtrace_lines(bt);
            if !frames.is_empty() {
                message.push_str(&format!("; wasm backtrace: {}", frames.join(" <- ")));
            }
        }
        Crash { message }
    }
}

/// Whether wasmtime stopped copying a call's data into the host: its
/// "hostcall fuel" (bytes per call, see [`arm`]) ran out. The error type is
/// private to wasmtime, so this reads its message.
fn is_transfer_overflow(error: &wasmtime::Error) -> bool {
    error
        .chain()
        .any(|e| e.to_string().contains("fuel allocated for hostcalls"))
}

/// The panic a Rust plugin printed to stderr, as one line: `panicked at
/// FILE:LINE:COL: MESSAGE`.
fn panic_message(stderr: &str) -> Option<String> {
    let mut lines = stderr.lines();
    while let Some(line) = lines.next() {
        if let Some(at) = line.find("panicked at ") {
            let place = line[at..].trim_end_matches(':');
            let message = lines.next().unwrap_or_default().trim();
            return Some(format!("{place}: {message}"));
        }
    }
    None
}

/// The innermost frames of a wasm backtrace, demangled, with source lines when
/// the plugin has debug info, and runs of the same frame (recursion) folded.
fn backtrace_lines(bt: &WasmBacktrace) -> Vec<String> {
    let mut lines: Vec<(String, usize)> = Vec::new();
    for f in bt.frames() {
        let name = f.func_name().map_or_else(
            || "<unnamed>".to_string(),
            |n| format!("{:#}", rustc_demangle::demangle(n)),
        );
        let line = match f
            .symbols()
            .iter()
            .find_map(|s| Some((s.file()?, s.line()?)))
        {
            Some((file, line)) => format!("{name} at {file}:{line}"),
            None => name,
        };
        match lines.last_mut() {
            Some((last, n)) if *last == line => *n += 1,
            _ => lines.push((line, 1)),
        }
        if lines.len() >= 12 {
            break;
        }
    }
    lines
        .into_iter()
        .map(|(l, n)| if n > 1 { format!("{l} (x{n})") } else { l })
        .collect()
}

/// A plugin instance: its store, and the plugin it came from.
struct Sandbox {
    plugin: Arc<Plugin>,
    store: Store<PluginState>,
}

impl Sandbox {
    fn call<R>(
        &mut self,
        call: &str,
        f: impl FnOnce(&mut Store<PluginState>) -> wasmtime::Result<R>,
    ) -> Result<R, Crash> {
        arm(&mut self.store, &self.plugin.limits);
        let r =
            f(&mut self.store).map_err(|e| Crash::new(&self.plugin, call, e, self.store.data()));
        // A limit the host enforces inside a call (the guest got an error
        // and may have carried on): the call ends the episode all the same.
        if r.is_ok() && self.store.data().over_limit.is_some() {
            let error = wasmtime::Error::msg("over a limit");
            return Err(Crash::new(&self.plugin, call, error, self.store.data()));
        }
        r
    }

    fn take_logs(&mut self) -> Vec<LogLine> {
        self.store.data_mut().take_logs()
    }
}

pub struct EnvInstance {
    sandbox: Sandbox,
    guest: env_plugin::Guest,
    vector: Option<env_vector::Guest>,
    packed: Option<env_vector_packed::Guest>,
    tools: Option<env_tools::Guest>,
}

/// What `step-vector` returns: a step of a small vector environment.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct VectorStep {
    /// The next observation's flat vector, padded with zeros to 8 values.
    pub observation: [f32; 8],
    pub reward: f32,
    pub terminated: bool,
    pub truncated: bool,
}

impl EnvInstance {
    pub fn init(&mut self, config: &str) -> Result<Result<EnvInfo, Refusal>, Crash> {
        let g = &self.guest;
        let r = self.sandbox.call("init", |s| g.call_init(s, config))?;
        Ok(r.map_err(Refusal))
    }
    pub fn reset(&mut self, seed: u64) -> Result<ResetResult, Crash> {
        let g = &self.guest;
        let r = self.sandbox.call("reset", |s| g.call_reset(s, seed))?;
        self.check(&r.observation, "reset")?;
        Ok(r)
    }
    pub fn step(&mut self, action: &Action) -> Result<StepResult, Crash> {
        let g = &self.guest;
        let r = self.sandbox.call("step", |s| g.call_step(s, action))?;
        self.check(&r.observation, "step")?;
        Ok(r)
    }

    /// An observation is recorded and shown as the env declares it: an
    /// image whose bytes do not match its size is the env's crash, named
    /// here, not a viewer's problem later.
    fn check(&self, observation: &Observation, call: &str) -> Result<(), Crash> {
        let limit = self.sandbox.plugin.limits.transfer_bytes;
        let sizes: Vec<(&str, u64)> = observation
            .iter()
            .map(|p| (p.name.as_str(), part_bytes(&p.value)))
            .collect();
        let total: u64 = sizes.iter().map(|(_, n)| n).sum();
        if total > limit {
            let mut largest = sizes;
            largest.sort_by_key(|p| std::cmp::Reverse(p.1));
            let parts: Vec<String> = largest
                .iter()
                .take(3)
                .map(|(name, n)| format!("`{name}` {}", mib(*n)))
                .collect();
            return Err(Crash {
                message: format!(
                    "env plugin {} crashed in `{call}`: its observation takes {} (largest parts: {}), over the transfer limit of {} (make it smaller, or raise it with --limit env.transfer-mb=N)",
                    self.sandbox.plugin.name,
                    mib(total),
                    parts.join(", "),
                    mib(limit)
                ),
            });
        }
        for part in observation {
            if let Value::Image(img) = &part.value {
                let want = u64::from(img.width)
                    .checked_mul(u64::from(img.height))
                    .and_then(|n| n.checked_mul(u64::from(img.channels)));
                if want != Some(img.pixels.len() as u64) {
                    return Err(Crash {
                        message: format!(
                            "env plugin {} crashed in `{call}`: observation part `{}` is a {}x{}x{} image, which takes {} bytes, but holds {}",
                            self.sandbox.plugin.name,
                            part.name,
                            img.width,
                            img.height,
                            img.channels,
                            want.map_or_else(|| "more than 2^64".to_string(), |n| n.to_string()),
                            img.pixels.len()
                        ),
                    });
                }
            }
        }
        Ok(())
    }
    /// Whether the plugin offers the single-copy fast path, `env-vector`
    /// or `env-vector-packed` (it may still decline).
    pub fn has_vector_step(&self) -> bool {
        self.vector.is_some() || self.packed.is_some()
    }

    /// One step by the allocation-free fast path: `env-vector-packed`'s
    /// `step-packed` (contract 0.1.2), or else `env-vector`'s `step-vector`
    /// (0.1.1). `action` holds a discrete action's index, or up to 8
    /// continuous values. `Ok(None)` where the plugin has neither or
    /// declines (its observation is not a vector of at most 8 values): call
    /// [`Self::step`].
    pub fn step_vector(&mut self, action: &[f32]) -> Result<Option<VectorStep>, Crash> {
        let Some(a) = values8(action) else {
            return Ok(None);
        };
        match &self.packed {
            Some(g) => {
                let words = self
                    .sandbox
                    .call("step-packed", |s| g.call_step_packed(s, a))?;
                Ok(unpack(words))
            }
            None => self.step_vector_unpacked(action),
        }
    }

    /// One step by `env-vector.step-vector` alone (contract 0.1.1, what a
    /// 0.1.1 plugin offers); [`Self::step_vector`] prefers the packed call.
    pub fn step_vector_unpacked(&mut self, action: &[f32]) -> Result<Option<VectorStep>, Crash> {
        let (Some(g), Some(a)) = (&self.vector, values8(action)) else {
            return Ok(None);
        };
        let r = self
            .sandbox
            .call("step-vector", |s| g.call_step_vector(s, a))?;
        Ok(r.map(|r| {
            let (o0, o1, o2, o3, o4, o5, o6, o7) = r.observation;
            VectorStep {
                observation: [o0, o1, o2, o3, o4, o5, o6, o7],
                reward: r.reward,
                terminated: r.flags & 1 != 0,
                truncated: r.flags & 2 != 0,
            }
        }))
    }

    /// A new episode by `env-vector-packed.reset-packed` (contract 0.1.2):
    /// the observation's flat vector, padded with zeros to 8 values.
    /// `Ok(None)` where the plugin has no such export or declines: call
    /// [`Self::reset`].
    pub fn reset_vector(&mut self, seed: u64) -> Result<Option<[f32; 8]>, Crash> {
        let Some(g) = &self.packed else {
            return Ok(None);
        };
        let words = self
            .sandbox
            .call("reset-packed", |s| g.call_reset_packed(s, seed))?;
        Ok(unpack(words).map(|r| r.observation))
    }

    pub fn batch_reset(&mut self, seeds: &[u64]) -> Result<Result<Vec<f32>, Refusal>, Crash> {
        let g = &self.guest;
        let r = self
            .sandbox
            .call("batch-reset", |s| g.call_batch_reset(s, seeds))?;
        Ok(r.map_err(Refusal))
    }
    pub fn batch_step(&mut self, actions: &[f32]) -> Result<Result<BatchResult, Refusal>, Crash> {
        let g = &self.guest;
        let r = self
            .sandbox
            .call("batch-step", |s| g.call_batch_step(s, actions))?;
        Ok(r.map_err(Refusal))
    }
    pub fn take_logs(&mut self) -> Vec<LogLine> {
        self.sandbox.take_logs()
    }

    /// The tools the environment offers (`env-tools`, contract 0.1.3;
    /// none for an environment that does not export it).
    pub fn tools(&mut self) -> Result<Vec<crate::model::Tool>, Crash> {
        let Some(t) = self.tools.as_ref() else {
            return Ok(Vec::new());
        };
        let t = t.clone();
        self.sandbox.call("tools", |s| t.call_tools(s))
    }
}

pub struct AgentInstance {
    sandbox: Sandbox,
    guest: agent_plugin::Guest,
}

impl AgentInstance {
    pub fn init(&mut self, config: &str) -> Result<Result<AgentInfo, Refusal>, Crash> {
        let g = &self.guest;
        let r = self.sandbox.call("init", |s| g.call_init(s, config))?;
        Ok(r.map_err(Refusal))
    }
    pub fn begin_episode(&mut self, env: &EnvInfo, task: &str, seed: u64) -> Result<(), Crash> {
        let g = &self.guest;
        self.sandbox.call("begin-episode", |s| {
            g.call_begin_episode(s, env, task, seed)
        })
    }
    pub fn act(
        &mut self,
        observation: &Observation,
        context: StepContext,
    ) -> Result<Action, Crash> {
        let g = &self.guest;
        self.sandbox
            .call("act", |s| g.call_act(s, observation, context))
    }
    pub fn end_episode(&mut self, end: EpisodeEnd) -> Result<(), Crash> {
        let g = &self.guest;
        self.sandbox
            .call("end-episode", |s| g.call_end_episode(s, end))
    }
    pub fn take_logs(&mut self) -> Vec<LogLine> {
        self.sandbox.take_logs()
    }
    pub fn take_writes(&mut self) -> Vec<MemoryWrite> {
        std::mem::take(&mut self.sandbox.store.data_mut().writes)
    }
    /// Gives the agent access to the episode's model calls.
    pub fn set_models(&mut self, models: crate::chat::SharedModels) {
        self.sandbox.store.data_mut().models = Some(models);
    }
    /// Whether the agent called a model since the last time this was asked.
    pub fn take_called_models(&mut self) -> bool {
        std::mem::take(&mut self.sandbox.store.data_mut().called_models)
    }
    /// The agent's memory as it sees it now.
    pub fn memory(&self) -> Option<&EpisodeMemory> {
        self.sandbox.store.data().memory.as_ref()
    }
    /// The agent's memory, for edits made by the user (the debugger).
    pub fn memory_mut(&mut self) -> Option<&mut EpisodeMemory> {
        self.sandbox.store.data_mut().memory.as_mut()
    }
}

pub struct RewardInstance {
    sandbox: Sandbox,
    guest: reward_plugin::Guest,
}

impl RewardInstance {
    pub fn init(&mut self, config: &str) -> Result<Result<RewardInfo, Refusal>, Crash> {
        let g = &self.guest;
        let r = self.sandbox.call("init", |s| g.call_init(s, config))?;
        Ok(r.map_err(Refusal))
    }
    pub fn score(&mut self, transition: &Transition) -> Result<ScoreResult, Crash> {
        let g = &self.guest;
        self.sandbox.call("score", |s| g.call_score(s, transition))
    }
    /// Gives the reward plugin access to the episode's model calls (an LLM judge).
    pub fn set_models(&mut self, models: crate::chat::SharedModels) {
        self.sandbox.store.data_mut().models = Some(models);
    }
    /// Whether the plugin called a model since the last time this was asked.
    pub fn take_called_models(&mut self) -> bool {
        std::mem::take(&mut self.sandbox.store.data_mut().called_models)
    }
    pub fn take_logs(&mut self) -> Vec<LogLine> {
        self.sandbox.take_logs()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `packed-step` layout as the WIT writes it, word by word.
    #[test]
    fn unpack_follows_the_documented_layout() {
        let bits = |lo: f32, hi: f32| u64::from(lo.to_bits()) | (u64::from(hi.to_bits()) << 32);
        let words = (
            bits(1.0, 2.0),
            bits(3.0, 4.0),
            bits(5.0, 6.0),
            bits(7.0, -8.0),
            u64::from(0.5f32.to_bits()) | (0b10 << 32),
        );
        assert_eq!(
            unpack(words),
            Some(VectorStep {
                observation: [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, -8.0],
                reward: 0.5,
                terminated: false,
                truncated: true,
            })
        );
        let terminated = (0, 0, 0, 0, 1 << 32);
        assert!(unpack(terminated).is_some_and(|s| s.terminated && !s.truncated));
        assert_eq!(unpack((0, 0, 0, 0, 1 << 63)), None);
        assert_eq!(values8(&[0.0; 9]), None);
        assert_eq!(
            values8(&[1.0, 2.0]),
            Some((1.0, 2.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0))
        );
    }
}
