//! The training config (TOML), converted to domain types once, here.
//! Every section rejects unknown keys, so a typo names itself.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error("config {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// A whole training config.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Name of the run in the database (also its id).
    pub name: String,
    pub seed: u64,
    pub env: EnvConfig,
    pub sampling: SamplingConfig,
    pub algorithm: AlgorithmConfig,
    pub policy: PolicyConfig,
    pub optimizer: OptimizerConfig,
    pub stop: StopConfig,
    #[serde(default)]
    pub checkpoint: CheckpointConfig,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvConfig {
    /// The env plugin (.wasm component), relative to the config file.
    pub plugin: PathBuf,
    /// Config string passed to the env's `init`.
    #[serde(default)]
    pub config: String,
    /// A host-side delay added to every env step, uniformly in [min, max]
    /// milliseconds (simulates slow environments such as GUI VMs).
    #[serde(default)]
    pub step_delay_ms: Option<[f64; 2]>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The classic coupled loop: sample a round with the current policy, train, repeat.
    Sync,
    /// Samplers never wait for the learner; the learner trains on what is ready.
    Async,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SamplingConfig {
    pub mode: Mode,
    /// Sampler threads.
    pub samplers: usize,
    /// Env instances per sampler thread.
    pub envs_per_sampler: usize,
    /// Steps per env per segment (segment-wise estimators, e.g. GAE).
    pub rollout_steps: usize,
    /// The learner trains once it has at least this many steps (async mode).
    pub batch_steps: usize,
    /// Steps chosen by a policy more than this many updates older than the
    /// learner's are dropped.
    pub max_policy_lag: u64,
    /// Record every sampled episode (frames and per-step data) in the database.
    #[serde(default = "yes")]
    pub record: bool,
}

fn yes() -> bool {
    true
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AdvantageKind {
    /// Generalised advantage estimation (gamma, lambda), bootstrapped from the value.
    Gae,
    /// Discounted Monte Carlo returns of whole episodes, minus the value when there is one.
    MonteCarlo,
    /// Group-relative: an episode's return normalised over the G episodes of its seed.
    Group,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PolicyLossKind {
    /// PPO's clipped surrogate, averaged over steps.
    Ppo,
    /// The plain policy gradient, -log pi(a|s) * A.
    Reinforce,
    /// PPO's clipped surrogate averaged per episode then over episodes (GRPO).
    Grpo,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlgorithmConfig {
    pub advantage: AdvantageKind,
    pub policy_loss: PolicyLossKind,
    pub gamma: f64,
    /// GAE's lambda.
    #[serde(default = "default_lambda")]
    pub lambda: f64,
    /// Episodes per group (group-relative advantages).
    #[serde(default = "default_group")]
    pub group_size: usize,
    /// Normalise advantages over each batch.
    #[serde(default = "yes")]
    pub normalize_advantages: bool,
    /// PPO/GRPO clip range.
    #[serde(default = "default_clip")]
    pub clip: f64,
    /// Train a value head and add its loss.
    pub value_loss: bool,
    #[serde(default = "default_value_coef")]
    pub value_coef: f64,
    #[serde(default)]
    pub entropy_coef: f64,
    /// Weight of the KL penalty to the policy the batch started from (for
    /// `policy.kind = "llm"`: to the frozen model as it was loaded).
    #[serde(default)]
    pub kl_coef: f64,
    /// Passes over each batch.
    pub epochs: usize,
    pub minibatches: usize,
    /// Importance ratios between the learner and the (stale) behaviour policy
    /// are truncated at this value.
    #[serde(default = "default_truncation")]
    pub ratio_truncation: f64,
}

fn default_lambda() -> f64 {
    0.95
}
fn default_group() -> usize {
    8
}
fn default_clip() -> f64 {
    0.2
}
fn default_value_coef() -> f64 {
    0.5
}
fn default_truncation() -> f64 {
    1.0
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// `net` (default: an MLP or CNN chosen from the env's spaces, acting
    /// on observations) or `llm` (a language model that an agent plugin
    /// calls; see `model` and `agent`).
    #[serde(default)]
    pub kind: PolicyKind,
    /// Hidden layer widths of the MLP (actor and critic each).
    #[serde(default)]
    pub hidden: Vec<usize>,
    /// `kind = "llm"`: the model to train, a GGUF file or a Hugging Face
    /// folder, relative to the config file.
    #[serde(default)]
    pub model: Option<PathBuf>,
    /// `kind = "llm"`: the agent plugin that drives the episodes and calls
    /// the model (endpoint `default`), relative to the config file.
    #[serde(default)]
    pub agent: Option<PathBuf>,
    /// Config string passed to the agent's `init`.
    #[serde(default)]
    pub agent_config: String,
    /// `kind = "llm"`: sequences the model decodes together (default: the
    /// episodes of an update, at most 32). The sampled tokens depend on it,
    /// never on timing.
    #[serde(default)]
    pub batch: Option<usize>,
    /// `kind = "llm"`: episodes per backward pass; their gradients add up
    /// over the update's episodes before one optimizer step (gradient
    /// accumulation; default: all of them in one pass).
    #[serde(default)]
    pub micro_batch: Option<usize>,
    /// `kind = "llm"`: train LoRA adapters instead of every weight.
    #[serde(default)]
    pub lora: Option<LoraConfig>,
    /// `kind = "llm"`: the type the model's weights and activations are
    /// held in, `f32` (default) or `bf16` (half the memory; the optimizer
    /// keeps `f32` master copies, and norms, softmaxes and
    /// log-probabilities stay `f32`).
    #[serde(default)]
    pub dtype: Dtype,
    /// `kind = "llm"`: keep the optimizer's state (moments, master copies)
    /// and the frozen reference model in CPU memory between updates, so a
    /// small GPU holds only the model, its gradients and activations.
    #[serde(default)]
    pub offload: bool,
    /// CNN for image observations: `[channels, stride]` per 3x3 conv layer
    /// (default `[[16, 1], [32, 1]]`).
    #[serde(default)]
    pub conv: Option<Vec<[usize; 2]>>,
    /// The image is average-pooled by this factor before the CNN (default 4).
    #[serde(default)]
    pub downsample: Option<usize>,
}

/// `policy.lora`: low-rank adapters on the chosen weights of every layer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoraConfig {
    pub rank: usize,
    /// The adapters' output is scaled by `alpha / rank` (default: twice the
    /// rank).
    #[serde(default)]
    pub alpha: Option<f64>,
    /// Which weights get one: `q_proj`, `k_proj`, `v_proj`, `o_proj`,
    /// `gate_proj`, `up_proj`, `down_proj` (default: the four attention
    /// ones).
    #[serde(default = "default_lora_targets")]
    pub targets: Vec<String>,
}

fn default_lora_targets() -> Vec<String> {
    ["q_proj", "k_proj", "v_proj", "o_proj"]
        .map(String::from)
        .to_vec()
}

/// `policy.dtype`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    #[default]
    F32,
    Bf16,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PolicyKind {
    #[default]
    Net,
    Llm,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    Constant,
    /// Linear decay to 0 over `stop.updates`.
    Linear,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimizerConfig {
    /// Only `adam` for now.
    pub kind: String,
    pub lr: f64,
    pub schedule: Schedule,
    #[serde(default = "default_grad_norm")]
    pub max_grad_norm: f64,
}

fn default_grad_norm() -> f64 {
    0.5
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StopConfig {
    /// Stop after this many updates.
    pub updates: u64,
    /// Stop early once the mean return of the last `window` episodes reaches this.
    #[serde(default)]
    pub mean_return: Option<f64>,
    #[serde(default = "default_window")]
    pub window: usize,
}

fn default_window() -> usize {
    20
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointConfig {
    /// Save a checkpoint every N updates (0: only at the end).
    #[serde(default)]
    pub every: u64,
    /// Folder for checkpoints, relative to the database's folder
    /// (default: `<db stem>-<run name>-checkpoints`).
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// Keep every checkpoint (`update-N.safetensors`), not only `latest`.
    #[serde(default)]
    pub keep_all: bool,
}

impl Config {
    /// Reads and checks a config file; relative paths in it are resolved
    /// against the file's folder.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let mut config = Config::parse(&text).map_err(|message| ConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        if config.env.plugin.is_relative() {
            config.env.plugin = base.join(&config.env.plugin);
        }
        for p in [&mut config.policy.model, &mut config.policy.agent]
            .into_iter()
            .flatten()
        {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        Ok(config)
    }

    /// Parses and checks config text.
    pub fn parse(text: &str) -> Result<Config, String> {
        let config: Config = toml::from_str(text).map_err(|e| {
            // toml's message spans lines (with a caret diagram); keep it on one.
            let msg = e.message().to_string();
            match e.span() {
                Some(span) => {
                    let line = text[..span.start.min(text.len())].lines().count().max(1);
                    format!("line {line}: {msg}")
                }
                None => msg,
            }
        })?;
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<(), String> {
        let positive = |key: &str, v: usize| {
            if v == 0 {
                Err(format!("`{key}` must be greater than 0"))
            } else {
                Ok(())
            }
        };
        positive("sampling.samplers", self.sampling.samplers)?;
        positive("sampling.envs_per_sampler", self.sampling.envs_per_sampler)?;
        positive("sampling.rollout_steps", self.sampling.rollout_steps)?;
        positive("algorithm.epochs", self.algorithm.epochs)?;
        positive("algorithm.minibatches", self.algorithm.minibatches)?;
        if self.optimizer.kind != "adam" {
            return Err(format!(
                "`optimizer.kind` is `{}`: only `adam` is implemented",
                self.optimizer.kind
            ));
        }
        if self.optimizer.lr.is_nan() || self.optimizer.lr <= 0.0 {
            return Err("`optimizer.lr` must be greater than 0".into());
        }
        if !(0.0..=1.0).contains(&self.algorithm.gamma) {
            return Err("`algorithm.gamma` must be within 0..=1".into());
        }
        if !(0.0..=1.0).contains(&self.algorithm.lambda) {
            return Err("`algorithm.lambda` must be within 0..=1".into());
        }
        if self.algorithm.advantage == AdvantageKind::Group {
            positive("algorithm.group_size", self.algorithm.group_size)?;
            if self.algorithm.group_size < 2 {
                return Err("`algorithm.group_size` must be at least 2".into());
            }
            if !self
                .sampling
                .envs_per_sampler
                .is_multiple_of(self.algorithm.group_size)
            {
                return Err(format!(
                    "`sampling.envs_per_sampler` ({}) must be a multiple of `algorithm.group_size` ({}): a group's episodes run in one sampler",
                    self.sampling.envs_per_sampler, self.algorithm.group_size
                ));
            }
        }
        if self.algorithm.advantage == AdvantageKind::Gae && !self.algorithm.value_loss {
            return Err(
                "`algorithm.advantage = \"gae\"` needs a value function: set `algorithm.value_loss = true`"
                    .into(),
            );
        }
        if self.policy.kind == PolicyKind::Llm {
            if self.policy.model.is_none() || self.policy.agent.is_none() {
                return Err(
                    "`policy.kind = \"llm\"` needs `policy.model` (a GGUF file or a Hugging Face folder) and `policy.agent` (the agent plugin that calls it)"
                        .into(),
                );
            }
            if self.algorithm.value_loss && self.algorithm.advantage != AdvantageKind::Gae {
                return Err(
                    "`policy.kind = \"llm\"` uses its value head for GAE over the generated tokens: with `algorithm.value_loss = true`, set `algorithm.advantage = \"gae\"`"
                        .into(),
                );
            }
            if let Some(l) = &self.policy.lora
                && (l.rank == 0 || l.targets.is_empty())
            {
                return Err(
                    "`policy.lora` needs `rank` of at least 1 and at least one target".into(),
                );
            }
            if self.policy.micro_batch == Some(0) || self.policy.batch == Some(0) {
                return Err("`policy.micro_batch` and `policy.batch` must be at least 1".into());
            }
        } else if self.policy.dtype != Dtype::F32 || self.policy.offload {
            return Err(
                "`policy.dtype` and `policy.offload` apply to `policy.kind = \"llm\"` only".into(),
            );
        } else if self.policy.hidden.is_empty() || self.policy.hidden.contains(&0) {
            return Err("`policy.hidden` must list at least one layer width > 0".into());
        }
        if let Some(conv) = &self.policy.conv
            && (conv.is_empty() || conv.iter().any(|&[c, s]| c == 0 || !(1..=4).contains(&s)))
        {
            return Err(
                "`policy.conv` must list at least one layer `[channels, stride]` with channels > 0 and stride 1..=4"
                    .into(),
            );
        }
        if self.policy.downsample == Some(0) {
            return Err("`policy.downsample` must be at least 1".into());
        }
        if let Some([lo, hi]) = self.env.step_delay_ms
            && !(lo >= 0.0 && hi >= lo)
        {
            return Err("`env.step_delay_ms` must be [min, max] with 0 <= min <= max".into());
        }
        if self.stop.updates == 0 {
            return Err("`stop.updates` must be greater than 0".into());
        }
        Ok(())
    }

    /// Whether samplers send whole episodes (episodic estimators) rather than
    /// fixed-length segments.
    pub fn whole_episodes(&self) -> bool {
        self.algorithm.advantage != AdvantageKind::Gae
    }

    /// Env slots sharing a reset seed (a group), 1 when not grouping.
    pub fn group_size(&self) -> usize {
        if self.algorithm.advantage == AdvantageKind::Group {
            self.algorithm.group_size
        } else {
            1
        }
    }
}

/// A small valid config for unit tests.
#[cfg(test)]
pub(crate) fn test_config() -> Config {
    match Config::parse(tests::GOOD) {
        Ok(c) => c,
        Err(e) => panic!("test config: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) const GOOD: &str = r#"
name = "t"
seed = 1
[env]
plugin = "cartpole.wasm"
[sampling]
mode = "sync"
samplers = 1
envs_per_sampler = 4
rollout_steps = 16
batch_steps = 64
max_policy_lag = 1
[algorithm]
advantage = "gae"
policy_loss = "ppo"
gamma = 0.99
value_loss = true
epochs = 2
minibatches = 2
[policy]
hidden = [8]
[optimizer]
kind = "adam"
lr = 0.001
schedule = "constant"
[stop]
updates = 3
"#;

    #[test]
    fn parses_a_good_config() {
        let c = Config::parse(GOOD).expect("good config");
        assert_eq!(c.algorithm.lambda, 0.95);
        assert!(c.sampling.record);
    }

    #[test]
    fn unknown_key_is_named() {
        let bad = GOOD.replace("epochs = 2", "epochs = 2\nepocs = 3");
        let e = Config::parse(&bad).unwrap_err();
        assert!(e.contains("epocs"), "{e}");
        assert!(e.starts_with("line "), "{e}");
    }

    #[test]
    fn bad_value_is_named() {
        let bad = GOOD.replace("policy_loss = \"ppo\"", "policy_loss = \"ppo2\"");
        let e = Config::parse(&bad).unwrap_err();
        assert!(e.contains("ppo2"), "{e}");
        let bad = GOOD.replace("value_loss = true", "value_loss = false");
        let e = Config::parse(&bad).unwrap_err();
        assert!(e.contains("value_loss"), "{e}");
        let bad = GOOD.replace("hidden = [8]", "hidden = [8]\nconv = [[8, 0]]");
        let e = Config::parse(&bad).unwrap_err();
        assert!(e.contains("policy.conv"), "{e}");
        let bad = GOOD.replace("hidden = [8]", "hidden = [8]\ndownsample = 0");
        let e = Config::parse(&bad).unwrap_err();
        assert!(e.contains("policy.downsample"), "{e}");
        let good = GOOD.replace(
            "hidden = [8]",
            "hidden = [8]\nconv = [[8, 1], [16, 2]]\ndownsample = 2",
        );
        let c = Config::parse(&good).expect("conv config");
        assert_eq!(c.policy.conv, Some(vec![[8, 1], [16, 2]]));
        for extra in ["dtype = \"bf16\"", "offload = true"] {
            let bad = GOOD.replace("hidden = [8]", &format!("hidden = [8]\n{extra}"));
            let e = Config::parse(&bad).unwrap_err();
            assert!(e.contains("policy.kind = \"llm\""), "{e}");
        }
        let bad = GOOD.replace("hidden = [8]", "hidden = [8]\ndtype = \"fp8\"");
        let e = Config::parse(&bad).unwrap_err();
        assert!(e.contains("fp8"), "{e}");
    }
}
