//! Trained policies as agents: `ludus run --agent checkpoint:PATH`, the
//! debugger's replays of such runs, and `ludus suite` cases.
//!
//! A [`CheckpointAgent`] is the arena's [`NativeAgentFactory`] for one
//! checkpoint file: it loads the policy once, checks it against the env's
//! spaces before anything is recorded, and makes one [`NativeAgent`] per
//! episode, acting on the CPU with one intra-op thread and an RNG seeded from
//! the episode's seed, so an episode is a function of its seed and the
//! checkpoint's bytes, whatever `--jobs` is.
//!
//! It goes through the policy's public entry points only (`Spec::features`,
//! `Policy::on_cpu`, `Policy::act`, `Policy::forward`, `Spec::env_action`),
//! so it serves whatever policies the trainer builds.

use std::cell::Cell;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ludus_arena::model::{Action, EnvInfo, Observation, StepContext};
use ludus_arena::{NativeAgent, NativeAgentError, NativeAgentFactory};
use tch::Tensor;

use crate::checkpoint;
use crate::config::PolicyConfig;
use crate::policy::{Head, Policy, Spec};
use crate::rng::Rng;

/// The prefix that names a checkpoint agent where a plugin path goes.
pub const SCHEME: &str = "checkpoint:";

/// The checkpoint path in a `checkpoint:PATH` agent, `None` for anything else
/// (a .wasm path).
pub fn checkpoint_path(agent: &str) -> Option<&str> {
    agent.strip_prefix(SCHEME)
}

/// How the agent picks its action (the agent's config string).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The policy's most likely action (`greedy`, the default): the argmax of
    /// a categorical head, the mean of a Gaussian one. Heads without a mode
    /// are sampled with the episode's RNG.
    Greedy,
    /// An action drawn from the policy with the episode's RNG (`sample`), as
    /// the trainer's samplers do.
    Sample,
}

impl Mode {
    pub fn parse(config: &str) -> Result<Mode, String> {
        match config.trim() {
            "" | "greedy" | "mode=greedy" => Ok(Mode::Greedy),
            "sample" | "mode=sample" => Ok(Mode::Sample),
            other => Err(format!(
                "agent config `{other}` is not understood: a checkpoint agent takes `greedy` (the default) or `sample`"
            )),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("cannot use checkpoint {path} as an agent: {message}")]
pub struct AgentError {
    pub path: PathBuf,
    pub message: String,
}

/// A checkpoint, loaded and checked, ready to make agents.
pub struct CheckpointAgent {
    path: PathBuf,
    hash: String,
    config: String,
    mode: Mode,
    spec: Spec,
    values: Vec<Vec<f32>>,
}

impl fmt::Debug for CheckpointAgent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CheckpointAgent")
            .field("path", &self.path)
            .field("hash", &self.hash)
            .field("mode", &self.mode)
            .finish()
    }
}

/// Runs libtorch work that panics on errors, as a `Result`.
fn guarded<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|p| {
        ludus_core::panic_message(p.as_ref())
            .unwrap_or("(no message)")
            .to_string()
    })
}

/// Loads the checkpoint at `path` (a `ludus train` checkpoint file) as an
/// agent with `config` (`greedy` or `sample`).
pub fn open(path: &Path, config: &str) -> Result<Arc<CheckpointAgent>, AgentError> {
    let err = |message: String| AgentError {
        path: path.to_path_buf(),
        message,
    };
    let mode = Mode::parse(config).map_err(err)?;
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let bytes = std::fs::read(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            err("file not found (`ludus train CONFIG.toml` writes checkpoints into NAME-checkpoints/ next to the database)".into())
        }
        _ => err(format!("cannot read it: {e}")),
    })?;
    let hash = blake3::hash(&bytes).to_hex().to_string();
    drop(bytes);
    let ck = guarded(|| checkpoint::load(&path))
        .map_err(|m| err(format!("not a readable checkpoint ({m})")))?
        .map_err(|e| err(e.message))?;
    let spec = ck.meta.spec.clone();
    let values: Vec<Vec<f32>> = ck.params.into_iter().map(|(_, v)| v).collect();
    // Build the policy and act once on an empty observation: parameters of
    // the wrong size fail here, with a message, not in an episode.
    guarded(|| {
        let policy = Policy::on_cpu(spec.clone(), &values);
        let mut features = Vec::new();
        spec.features(&Vec::new(), &mut features);
        policy.act(&features, 1, &mut Rng::new(0))
    })
    .map_err(|m| err(format!("its parameters do not fit its policy ({m})")))?;
    Ok(Arc::new(CheckpointAgent {
        path,
        hash,
        config: config.to_string(),
        mode,
        spec,
        values,
    }))
}

/// The [`ludus_arena::replay::AgentResolver`] for the `ludus` binary:
/// rebuilds a recorded `checkpoint:PATH` agent with its recorded config.
pub fn resolve(source: &str, config: &str) -> Result<Arc<dyn NativeAgentFactory>, String> {
    let Some(path) = checkpoint_path(source) else {
        return Err(format!(
            "unknown native agent `{source}` (this ludus knows `checkpoint:PATH`)"
        ));
    };
    match open(Path::new(path), config) {
        Ok(agent) => Ok(agent),
        Err(e) => Err(e.to_string()),
    }
}

fn describe(spec: &Spec) -> String {
    let actions = match &spec.head {
        Head::Discrete { n } => format!("{n} discrete actions"),
        Head::Gaussian { low, .. } => format!("{} continuous actions", low.len()),
        Head::Pointer {
            width,
            height,
            grid_w,
            grid_h,
        } => format!("clicks on a {grid_w}x{grid_h} grid over a {width}x{height} image"),
    };
    format!("{} observation features and {actions}", spec.obs_dim)
}

impl CheckpointAgent {
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }
}

impl NativeAgentFactory for CheckpointAgent {
    fn source(&self) -> String {
        format!("{SCHEME}{}", self.path.display())
    }

    fn hash(&self) -> String {
        self.hash.clone()
    }

    fn config(&self) -> String {
        self.config.clone()
    }

    fn check_env(&self, env: &EnvInfo) -> Result<(), NativeAgentError> {
        // The same policy shape (MLP widths, CNN layers and pooling) for this env.
        let shape = PolicyConfig {
            hidden: self.spec.hidden.clone(),
            conv: self.spec.image.as_ref().map(|im| im.conv.clone()),
            downsample: self.spec.image.as_ref().map(|im| im.downsample),
            ..Default::default()
        };
        let wanted = Spec::from_config(env, &shape).map_err(|m| {
            format!(
                "checkpoint {} cannot act in this env: {m}",
                self.path.display()
            )
        })?;
        if wanted == self.spec {
            return Ok(());
        }
        let (mine, theirs) = (describe(&self.spec), describe(&wanted));
        let detail = if mine == theirs {
            "the bounds of its observation space differ".to_string()
        } else {
            format!("the policy reads {mine}, the env gives {theirs}")
        };
        Err(format!(
            "checkpoint {} was trained for another env than `{}`: {detail} (pick the checkpoint of a run on this env)",
            self.path.display(),
            env.name
        )
        .into())
    }

    fn make(&self) -> Result<Box<dyn NativeAgent>, NativeAgentError> {
        thread_local! {
            static ONE_THREAD: Cell<bool> = const { Cell::new(false) };
        }
        // One intra-op thread per worker: the workers are the parallelism,
        // and the same thread count every run keeps results identical.
        ONE_THREAD.with(|done| {
            if !done.get() {
                tch::set_num_threads(1);
                done.set(true);
            }
        });
        let policy = guarded(|| Policy::on_cpu(self.spec.clone(), &self.values))?;
        Ok(Box::new(Acting {
            policy,
            spec: self.spec.clone(),
            mode: self.mode,
            rng: Rng::new(0),
            features: Vec::new(),
        }))
    }
}

/// One episode's agent.
struct Acting {
    policy: Policy,
    spec: Spec,
    mode: Mode,
    rng: Rng,
    features: Vec<f32>,
}

impl NativeAgent for Acting {
    fn begin_episode(
        &mut self,
        _env: &EnvInfo,
        _task: &str,
        seed: u64,
    ) -> Result<(), NativeAgentError> {
        self.rng = Rng::new(seed);
        Ok(())
    }

    fn act(
        &mut self,
        observation: &Observation,
        _context: StepContext,
    ) -> Result<Action, NativeAgentError> {
        self.features.clear();
        self.spec.features(observation, &mut self.features);
        let action = match self.mode {
            Mode::Greedy => greedy(&self.policy, &self.features, &mut self.rng)?,
            Mode::Sample => sample(&self.policy, &self.features, &mut self.rng)?,
        };
        Ok(self.spec.env_action(&action))
    }
}

fn sample(policy: &Policy, features: &[f32], rng: &mut Rng) -> Result<Vec<f32>, String> {
    policy
        .act(features, 1, rng)
        .pop()
        .map(|s| s.action)
        .ok_or_else(|| "the policy gave no action".to_string())
}

/// The most likely action: argmax of the logits, or the Gaussian's mean.
fn greedy(policy: &Policy, features: &[f32], rng: &mut Rng) -> Result<Vec<f32>, String> {
    // A pointer head is a categorical over cells: its mode is the likeliest cell.
    let gaussian = matches!(policy.spec.head, Head::Gaussian { .. });
    if !gaussian
        && !matches!(
            policy.spec.head,
            Head::Discrete { .. } | Head::Pointer { .. }
        )
    {
        return sample(policy, features, rng);
    }
    let head: Vec<f32> = tch::no_grad(|| {
        let x = Tensor::from_slice(features).view([1, features.len() as i64]);
        let out = policy.forward(&x);
        Vec::<f32>::try_from(&out.head.flatten(0, -1))
    })
    .map_err(|e| format!("cannot read the policy's output: {e}"))?;
    if head.iter().any(|x| !x.is_finite()) {
        return Err("the policy's output is not finite (NaN or infinite weights?)".into());
    }
    if gaussian {
        return Ok(head);
    }
    let mut best = 0;
    for (i, x) in head.iter().enumerate() {
        if *x > head[best] {
            best = i;
        }
    }
    Ok(vec![best as f32])
}
