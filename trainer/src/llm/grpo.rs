//! Training the language model an LLM agent calls (`policy.kind = "llm"`):
//! GRPO in sync mode. Each update plays groups of episodes through the
//! agent plugin, the episodes of a group on the same task seed (their model
//! calls sample apart through the run's salt); every call keeps the token
//! ids it read and generated and their log-probabilities, so the learner
//! trains on exactly the sampled tokens; the loss is PPO's clipped surrogate
//! on generated tokens, averaged per episode, then over episodes.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use ludus_arena::Limits;
use ludus_arena::chat::{ChatRequest, LiveAnswer, ModelClient, ModelSetup, call_seed};
use ludus_arena::memory::MemoryBase;
use ludus_arena::model::{Frame, Observation, Timing as StepTiming};
use ludus_arena::recorder::{EpisodeFinish, Recorder};
use ludus_arena::run::{AgentSpec, PluginSpec, Prepared, RunSpec, Stepper, prepare};
use ludus_arena::train_store::{ResumePoint, StepStat};
use ludus_core::episode_seed;
use tch::{Device, Kind, Tensor};

use super::backend::PolicyModel;
use super::engine::Engine;
use crate::advantage::{gae, group_relative, normalize};
use crate::checkpoint::CheckpointError;
use crate::config::{AdvantageKind, Config, Mode, PolicyLossKind};
use crate::learner::{Adam, learning_rate};
use crate::options::{
    TrainError, TrainOptions, TrainSummary, UpdateReport, checkpoint_dir, device,
};

/// One model call as the learner needs it.
#[derive(Clone, Debug)]
struct Sampled {
    prompt: Vec<u32>,
    generated: Vec<u32>,
    logprobs: Vec<f32>,
}

/// The model, answering the episodes' calls (batched) and keeping what
/// they sampled, by the call's seed.
struct Sampler {
    engine: Engine,
    calls: Mutex<HashMap<u64, Sampled>>,
    /// The policy version (updates made), recorded with each answer as
    /// `MODEL@vN`.
    version: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Sampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sampler")
    }
}

impl ModelClient for Sampler {
    fn has_endpoint(&self, name: &str) -> bool {
        name == "default"
    }

    fn chat(&self, request: &ChatRequest, _images: &Observation, seed: u64) -> LiveAnswer {
        let started = Instant::now();
        let mut asked = request.clone();
        // The recorded answer carries the tokens and their log-probabilities
        // whether or not the agent asked for them: training reads them.
        asked.logprobs = true;
        let result = self.engine.answer(&asked, seed).map(|(mut response, g)| {
            let v = self.version.load(std::sync::atomic::Ordering::Relaxed);
            response.model = format!("{}@v{v}", response.model);
            if let Ok(mut calls) = self.calls.lock() {
                calls.insert(
                    seed,
                    Sampled {
                        prompt: g.prompt_ids,
                        generated: g.ids,
                        logprobs: g.logprobs,
                    },
                );
            }
            response
        });
        let seconds = started.elapsed().as_secs_f64();
        LiveAnswer {
            result,
            attempts: Vec::new(),
            latency_ms: seconds * 1e3,
        }
    }

    fn prices(&self, _endpoint: &str) -> (f64, f64) {
        (0.0, 0.0)
    }
}

impl Sampler {
    /// The calls of the episode played from `seed` with `salt`, in the order
    /// they were made (`made` at most).
    fn take_calls(&self, seed: u64, salt: u64, made: usize) -> Vec<Sampled> {
        let Ok(mut calls) = self.calls.lock() else {
            return Vec::new();
        };
        (0..made as u64)
            .filter_map(|i| calls.remove(&call_seed(seed, salt, i)))
            .collect()
    }
}

/// Each episode's advantage: group-relative (GRPO), or its return
/// (REINFORCE's Monte Carlo estimate), normalised over the update's
/// episodes when `algorithm.normalize_advantages`.
fn advantages(config: &Config, returns: &[f64], group: usize) -> Vec<f32> {
    match config.algorithm.advantage {
        AdvantageKind::Group => returns.chunks(group).flat_map(group_relative).collect(),
        _ => {
            let mut a: Vec<f32> = returns.iter().map(|r| *r as f32).collect();
            if config.algorithm.normalize_advantages {
                normalize(&mut a);
            }
            a
        }
    }
}

/// Per-token advantages and value targets of each episode (GAE over its
/// generated tokens, the return on the last), normalised over all the
/// batch's tokens when `algorithm.normalize_advantages`.
fn token_advantages(
    m: &PolicyModel,
    (w, b): &(Tensor, Tensor),
    trained: &[&(f32, f64, Vec<Sampled>)],
    config: &Config,
) -> Vec<(Tensor, Tensor)> {
    let device = w.device();
    let mut per_episode: Vec<(Vec<f32>, Vec<f32>)> = tch::no_grad(|| {
        trained
            .iter()
            .map(|(_, ret, calls)| {
                let states: Vec<Tensor> = calls
                    .iter()
                    .filter(|c| !c.generated.is_empty())
                    .map(|c| m.llama.logprobs_and_states(&c.prompt, &c.generated).1)
                    .collect();
                let values = Tensor::cat(&states, 0).mv(w) + b;
                let values: Vec<f32> =
                    Vec::try_from(&values.to_device(tch::Device::Cpu)).unwrap_or_default();
                let mut rewards = vec![0f32; values.len()];
                if let Some(last) = rewards.last_mut() {
                    *last = *ret as f32;
                }
                let a = &config.algorithm;
                gae(&rewards, &values, 0.0, a.gamma, a.lambda)
            })
            .collect()
    });
    if config.algorithm.normalize_advantages {
        let mut all: Vec<f32> = per_episode.iter().flat_map(|e| e.0.clone()).collect();
        normalize(&mut all);
        let mut rest = all.as_slice();
        for e in &mut per_episode {
            let (head, tail) = rest.split_at(e.0.len());
            e.0 = head.to_vec();
            rest = tail;
        }
    }
    per_episode
        .into_iter()
        .map(|(a, t)| {
            (
                Tensor::from_slice(&a).to_device(device),
                Tensor::from_slice(&t).to_device(device),
            )
        })
        .collect()
}

/// The tensors training moves: the adapters with LoRA, else every weight
/// (the same order in every copy of the model).
fn trainable(m: &PolicyModel, lora: bool) -> Vec<Tensor> {
    if lora {
        m.llama.lora_named().into_iter().map(|(_, t)| t).collect()
    } else {
        m.llama.params()
    }
}

/// Copies the learner's trained tensors into the behaviour policy's.
fn publish(from: &[Tensor], to: &[Tensor]) {
    tch::no_grad(|| {
        for (src, dst) in from.iter().zip(to) {
            let mut dst = dst.shallow_clone();
            dst.copy_(src);
        }
    });
}

/// Episodes in an update: every sampler's envs, a group at least.
fn episodes_per_update(config: &Config) -> usize {
    let group = config.algorithm.group_size.max(1);
    (config.sampling.samplers * config.sampling.envs_per_sampler).max(group)
}

/// One update's episodes as sampled: the policy version that sampled them,
/// the task counter after them, and each episode's seed, frames and calls.
struct Batch {
    version: u64,
    /// How long sampling it took.
    seconds: f64,
    task_after: u64,
    episodes: Vec<(u64, Played, Vec<Sampled>)>,
}

/// Plays one update's episodes at once (groups of `group_size` on one task
/// seed each), so their model calls share decoding steps.
fn sample(
    prepared: &Prepared,
    memory: &MemoryBase,
    sampler: &Sampler,
    config: &Config,
    task: &mut u64,
) -> Result<Batch, TrainError> {
    let started = Instant::now();
    let version = sampler.version.load(std::sync::atomic::Ordering::Relaxed);
    let group = config.algorithm.group_size.max(1);
    let mut plays = Vec::new();
    for _ in 0..episodes_per_update(config) / group {
        let seed = episode_seed(config.seed, *task);
        *task += 1;
        for member in 0..group {
            plays.push((seed, member as u64 + 1));
        }
    }
    let outcomes: Vec<Option<Played>> = std::thread::scope(|scope| {
        let handles: Vec<_> = plays
            .iter()
            .map(|&(seed, salt)| {
                let mut p = prepared.clone();
                p.spec.models.salt = salt;
                let memory = memory.clone();
                scope.spawn(move || play(&p, seed, memory))
            })
            .collect();
        handles.into_iter().map(|h| h.join().ok()).collect()
    });
    let mut episodes = Vec::new();
    for (&(seed, salt), outcome) in plays.iter().zip(outcomes) {
        let played =
            outcome.ok_or_else(|| TrainError::Env("an episode's thread panicked".into()))?;
        let made = played.0.iter().map(|(f, _)| f.model_calls.len()).sum();
        let calls = sampler.take_calls(seed, salt, made);
        episodes.push((seed, played, calls));
    }
    Ok(Batch {
        version,
        seconds: started.elapsed().as_secs_f64(),
        task_after: *task,
        episodes,
    })
}

/// One episode played: its frames and how it ended.
type Played = (Vec<(Frame, StepTiming)>, EpisodeFinish);

/// Plays one episode through the agent plugin.
fn play(prepared: &Prepared, seed: u64, memory: MemoryBase) -> Played {
    let mut frames = Vec::new();
    let finish = match Stepper::start(prepared, seed, memory) {
        Ok(mut stepper) => {
            while let Some(frame) = stepper.step(None) {
                frames.push(frame);
            }
            stepper.finish()
        }
        Err(finish) => *finish,
    };
    (frames, finish)
}

/// Trains the model `policy.model` through the agent `policy.agent`.
pub fn train(
    opts: &TrainOptions,
    on_update: &mut dyn FnMut(&UpdateReport),
) -> Result<TrainSummary, TrainError> {
    let started = Instant::now();
    let config = &opts.config;
    let device = device(opts.device)?;
    let bad = |m: String| TrainError::Env(m);
    let model_path = config
        .policy
        .model
        .clone()
        .ok_or_else(|| bad("no policy.model".into()))?;
    let agent_path = config
        .policy
        .agent
        .clone()
        .ok_or_else(|| bad("no policy.agent".into()))?;
    let ck_dir = checkpoint_dir(config, &opts.db);
    let latest = ck_dir.join("llm-latest");
    let resumed = if opts.resume {
        Some(State::load(&latest, &config.name)?)
    } else {
        None
    };
    let lora = config.policy.lora.as_ref();
    // With adapters, a resumed run reads the weights as they were loaded and
    // the adapters from the checkpoint; without, the trained weights.
    let weights = if resumed.is_some() && lora.is_none() {
        &latest
    } else {
        &model_path
    };
    let offload = config.policy.offload;
    let open = |path: &Path, device: Device| -> Result<PolicyModel, TrainError> {
        PolicyModel::open_as(path, device, config.policy.dtype, false)
            .map_err(|e| bad(e.to_string()))
    };
    let mut model = open(weights, device)?;
    // Answers name the model as configured, resumed or not.
    if let Some(stem) = model_path.file_stem() {
        model.name = stem.to_string_lossy().into_owned();
    }
    // The frozen reference a KL penalty holds the policy to: the model as
    // it was loaded (in CPU memory with offload).
    let reference = if config.algorithm.kl_coef > 0.0 {
        Some(open(
            &model_path,
            if offload { Device::Cpu } else { device },
        )?)
    } else {
        None
    };
    let mut params = match lora {
        Some(l) => {
            let alpha = l.alpha.unwrap_or(2.0 * l.rank as f64);
            let llama = &mut model.llama;
            llama
                .add_lora(l.rank as i64, alpha, &l.targets, config.seed)
                .map_err(|e| bad(format!("policy.lora: {e}")))?;
            if resumed.is_some() {
                llama
                    .load_lora(&latest.join("adapter_model.safetensors"))
                    .map_err(|e| bad(e.to_string()))?;
            }
            trainable(&model, true)
        }
        None => {
            model.llama.set_trainable(true);
            trainable(&model, false)
        }
    };
    // PPO with a value head: a linear head on the final hidden state.
    let value_head = config.algorithm.value_loss.then(|| {
        let dim = model.llama.config.dim;
        let zeros = |n: i64| Tensor::zeros([n], (Kind::Float, device)).set_requires_grad(true);
        (zeros(dim), zeros(1))
    });
    if let Some((w, b)) = &value_head {
        params.push(w.shallow_clone());
        params.push(b.shallow_clone());
    }
    let mut adam = Adam::placed(&params, offload.then_some(Device::Cpu));
    if let Some(st) = &resumed {
        st.restore(&latest, &mut adam, value_head.as_ref())?;
    }
    let group = config.algorithm.group_size.max(1);
    let per_update = episodes_per_update(config);
    model.batch = config
        .policy
        .batch
        .unwrap_or(per_update.min(32))
        .clamp(1, super::backend::MAX_BATCH);
    let asynchronous = config.sampling.mode == Mode::Async;
    // In async mode the samplers hold their own copy of the policy (the
    // behaviour policy), which the learner publishes to after each update;
    // in sync mode they answer with the learner's model itself.
    let behaviour = if asynchronous {
        let mut b = open(weights, device)?;
        b.name = model.name.clone();
        b.batch = model.batch;
        if let Some(l) = lora {
            let alpha = l.alpha.unwrap_or(2.0 * l.rank as f64);
            b.llama
                .add_lora(l.rank as i64, alpha, &l.targets, config.seed)
                .map_err(|e| bad(format!("policy.lora: {e}")))?;
        }
        publish(&params, &trainable(&b, lora.is_some()));
        Some(Arc::new(Mutex::new(b)))
    } else {
        None
    };
    let model = Arc::new(Mutex::new(model));
    let sampler = Arc::new(Sampler {
        engine: Engine::start(behaviour.clone().unwrap_or_else(|| model.clone())),
        calls: Mutex::new(HashMap::new()),
        version: std::sync::atomic::AtomicU64::new(0),
    });
    let spec_json = serde_json::json!({
        "kind": "train",
        "config": config,
        "env": { "path": config.env.plugin },
        "policy": { "kind": "llm", "model": model_path, "agent": config.policy.agent },
    });
    let resume_point = resumed.as_ref().map(|st| ResumePoint {
        update: st.update,
        next_episode: st.episodes,
        open: Vec::new(),
    });
    let recorder = Recorder::start_training(
        &opts.db,
        &config.name,
        config.seed,
        &spec_json,
        resume_point.as_ref(),
    )?;
    let mut writer = recorder.writer();
    let limits = Limits::DEFAULT;
    let prepared = prepare(RunSpec {
        env: PluginSpec {
            path: config.env.plugin.clone(),
            config: config.env.config.clone(),
            limits,
        },
        agent: AgentSpec::Plugin(PluginSpec {
            path: agent_path,
            config: config.policy.agent_config.clone(),
            limits,
        }),
        reward: None,
        episodes: 1,
        seed: config.seed,
        jobs: 1,
        db: opts.db.clone(),
        models: ModelSetup {
            client: Some(sampler.clone()),
            ..Default::default()
        },
        step_delay: std::time::Duration::ZERO,
    })
    .map_err(|e| bad(e.to_string()))?;
    let groups = per_update / group;
    let memory = MemoryBase {
        agent: Arc::new(BTreeMap::new()),
        user: Arc::new(BTreeMap::new()),
    };
    let window = config.stop.window.max(1);
    let mut recent: std::collections::VecDeque<f64> = std::collections::VecDeque::new();
    let (mut episodes, mut env_steps, mut task) = (0u64, 0u64, 0u64);
    let mut reached = false;
    let mut update = 0;
    if let Some(st) = &resumed {
        (episodes, env_steps, task, update) = (st.episodes, st.env_steps, st.task, st.update);
        recent.extend(&st.recent);
        sampler
            .version
            .store(update, std::sync::atomic::Ordering::Relaxed);
    }
    let max_lag = config.sampling.max_policy_lag;
    let mut saved: Option<u64> = None;
    let stopping = std::sync::atomic::AtomicBool::new(false);
    let mut last_end = Instant::now();
    let result = std::thread::scope(|scope| -> Result<(), TrainError> {
        // Async mode: a thread samples batch after batch with the behaviour
        // policy it holds, one batch ahead of the learner at most.
        let source = if asynchronous {
            let (tx, rx) = std::sync::mpsc::sync_channel::<Result<Batch, TrainError>>(1);
            let (prepared, memory, sampler, stopping) = (&prepared, &memory, &sampler, &stopping);
            let mut task = task;
            scope.spawn(move || {
                while !stopping.load(std::sync::atomic::Ordering::Relaxed) {
                    let batch = sample(prepared, memory, sampler, config, &mut task);
                    if tx.send(batch).is_err() {
                        break;
                    }
                }
            });
            Some(rx)
        } else {
            None
        };
        while update < config.stop.updates {
            let sampled = match &source {
                Some(rx) => rx
                    .recv()
                    .map_err(|_| bad("the sampling thread stopped".into()))??,
                None => sample(&prepared, &memory, &sampler, config, &mut task)?,
            };
            task = sampled.task_after;
            let lag = update.saturating_sub(sampled.version);
            update += 1;
            let mut batch: Vec<(f32, f64, Vec<Sampled>)> = Vec::new();
            let (mut successes, mut returns_sum) = (0u64, 0f64);
            let mut played = Vec::new();
            for (seed, (frames, finish), calls) in sampled.episodes {
                env_steps += finish.length;
                successes += u64::from(finish.success);
                returns_sum += finish.return_;
                recent.push_back(finish.return_);
                while recent.len() > window {
                    recent.pop_front();
                }
                played.push((episodes, seed, frames, finish, calls));
                episodes += 1;
            }
            let returns: Vec<f64> = played.iter().map(|p| p.3.return_).collect();
            let advantages = advantages(config, &returns, group);
            for ((idx, seed, frames, finish, calls), a) in played.into_iter().zip(advantages) {
                // Recorded like any sampled episode: frames (with each call's
                // tokens, log-probabilities and policy version), then a row per
                // step with the advantage it was trained with.
                writer.start(idx, seed);
                let mut stats = Vec::new();
                for (frame, timing) in &frames {
                    writer.push(idx, frame, *timing);
                    let log_prob = frame
                        .model_calls
                        .iter()
                        .filter_map(|c| c.result.as_ref().ok())
                        .flat_map(|r| r.tokens.iter().map(|t| t.logprob))
                        .sum();
                    stats.push(StepStat {
                        version: sampled.version,
                        log_prob,
                        value: 0.0,
                        advantage: Some(a),
                        lag,
                    });
                }
                writer.step_stats(idx, 0, &stats);
                let finish_return = finish.return_;
                writer.end(idx, finish);
                batch.push((a, finish_return, calls));
            }
            let lr = learning_rate(config, update);
            let clip = config.algorithm.clip;
            let (mut loss_sum, mut kl_sum, mut grad_norm, mut kl_ref) = (0f64, 0f64, 0f64, 0f64);
            let mut value_loss = 0f64;
            let epochs = config.algorithm.epochs.max(1);
            // A batch sampled by a policy more than `max_policy_lag` updates
            // old is recorded but not trained on.
            // Tokens the update's episodes generated, all decoding together.
            let tokens = batch
                .iter()
                .map(|(_, _, c)| c.iter().map(|s| s.generated.len()).sum::<usize>())
                .sum::<usize>() as f64;
            let learning = Instant::now();
            let signal = lag <= max_lag
                && batch.iter().any(|(a, _, c)| {
                    (*a != 0.0 || value_head.is_some()) && c.iter().any(|s| !s.generated.is_empty())
                });
            if signal {
                let m = model.lock().map_err(|_| bad("model poisoned".into()))?;
                let loss_kind = config.algorithm.policy_loss;
                // Episodes with tokens, and all their tokens (`tokens`): the
                // divisors that make the micro-batches' losses add up to the
                // batch's.
                let trained: Vec<&(f32, f64, Vec<Sampled>)> = batch
                    .iter()
                    .filter(|(_, _, c)| c.iter().any(|s| !s.generated.is_empty()))
                    .collect();
                let n_episodes = trained.len() as f64;
                let micro = config.policy.micro_batch.unwrap_or(trained.len()).max(1);
                // With a value head: per-token advantages and value targets
                // by GAE over each episode's generated tokens (its return
                // on the last one), from the values before this update.
                let per_token = value_head
                    .as_ref()
                    .map(|head| token_advantages(&m, head, &trained, config));
                // The reference's log-probabilities of each episode's tokens
                // (it is frozen: the same in every epoch), computed on the
                // learner's device (a moment's copy there with offload).
                let reference_lp: Option<Vec<Tensor>> = reference.as_ref().map(|r| {
                    tch::no_grad(|| {
                        let moved = (r.llama.device != device).then(|| r.llama.moved_to(device));
                        let r = moved.as_ref().unwrap_or(&r.llama);
                        trained
                            .iter()
                            .map(|(_, _, calls)| {
                                let parts: Vec<Tensor> = calls
                                    .iter()
                                    .filter(|c| !c.generated.is_empty())
                                    .map(|c| r.logprobs_of(&c.prompt, &c.generated))
                                    .collect();
                                Tensor::cat(&parts, 0)
                            })
                            .collect()
                    })
                });
                for _ in 0..epochs {
                    let (mut loss_total, mut kl_total, mut ref_total) = (0f64, 0f64, 0f64);
                    let mut value_total = 0f64;
                    for (c_no, chunk) in trained.chunks(micro).enumerate() {
                        let first = c_no * micro;
                        let mut terms = Vec::new();
                        for (k, (advantage, _, calls)) in chunk.iter().enumerate() {
                            let episode = first + k;
                            let mut new_lp = Vec::new();
                            let mut states = Vec::new();
                            let mut old_lp = Vec::new();
                            for c in calls.iter().filter(|c| !c.generated.is_empty()) {
                                let (lp, st) = m.llama.logprobs_and_states(&c.prompt, &c.generated);
                                new_lp.push(lp);
                                states.push(st);
                                old_lp.extend_from_slice(&c.logprobs);
                            }
                            let new_lp = Tensor::cat(&new_lp, 0);
                            let old_lp = Tensor::from_slice(&old_lp).to_device(device);
                            // The advantage of each token: the episode's, or
                            // GAE's per token.
                            let a = match &per_token {
                                Some(p) => p[episode].0.shallow_clone(),
                                None => {
                                    Tensor::from(f64::from(*advantage) as f32).to_device(device)
                                }
                            };
                            let term = match loss_kind {
                                // The answer's log-probability times the advantage.
                                PolicyLossKind::Reinforce if lag == 0 => {
                                    -(&new_lp * &a).sum(Kind::Float) / n_episodes
                                }
                                // Off-policy: each token weighted by its
                                // importance ratio, truncated.
                                PolicyLossKind::Reinforce => {
                                    let w = (&new_lp - &old_lp)
                                        .exp()
                                        .clamp_max(config.algorithm.ratio_truncation)
                                        .detach();
                                    -(&new_lp * w * &a).sum(Kind::Float) / n_episodes
                                }
                                PolicyLossKind::Ppo | PolicyLossKind::Grpo => {
                                    let mut ratio = (&new_lp - &old_lp).exp();
                                    if lag > 0 {
                                        ratio = ratio.clamp_max(config.algorithm.ratio_truncation);
                                    }
                                    let surrogate = (&ratio * &a)
                                        .min_other(&(ratio.clamp(1.0 - clip, 1.0 + clip) * &a));
                                    if loss_kind == PolicyLossKind::Ppo {
                                        // Averaged over all the batch's tokens.
                                        -surrogate.sum(Kind::Float) / tokens
                                    } else {
                                        // Per episode, then over episodes.
                                        -surrogate.mean(Kind::Float) / n_episodes
                                    }
                                }
                            };
                            let term = match (&value_head, &per_token) {
                                (Some((w, b)), Some(p)) => {
                                    let values = Tensor::cat(&states, 0).mv(w) + b;
                                    let err = (values - &p[episode].1).square().mean(Kind::Float);
                                    value_total += err.double_value(&[]) / n_episodes;
                                    term + err * (config.algorithm.value_coef / n_episodes)
                                }
                                _ => term,
                            };
                            let mut penalty = None;
                            if let Some(r) = &reference_lp {
                                // The k3 estimator of KL(policy || reference), per token.
                                let d = &r[episode] - &new_lp;
                                let k3 = (d.exp() - &d - 1.0).mean(Kind::Float);
                                ref_total += k3.double_value(&[]) / n_episodes;
                                penalty = Some(k3 * (config.algorithm.kl_coef / n_episodes));
                            }
                            kl_total += (old_lp - new_lp.detach())
                                .mean(Kind::Float)
                                .double_value(&[])
                                / n_episodes;
                            terms.push(match penalty {
                                Some(p) => &term + p,
                                None => term,
                            });
                        }
                        // Gradients add up over the micro-batches (in
                        // `f32`, for a bf16 model: summed apart from the
                        // model's before the next one).
                        let loss = Tensor::stack(&terms, 0).sum(Kind::Float);
                        loss.backward();
                        if (c_no + 1) * micro < trained.len() {
                            adam.accumulate(&mut params);
                        }
                        loss_total += loss.double_value(&[]);
                    }
                    loss_sum = loss_total;
                    kl_sum = kl_total;
                    kl_ref = ref_total;
                    value_loss = value_total;
                    grad_norm = adam.step(&mut params, lr, config.optimizer.max_grad_norm);
                }
            }
            let learn_s = learning.elapsed().as_secs_f64();
            let trained_tokens = if signal { tokens * epochs as f64 } else { 0.0 };
            let n = (groups * group) as f64;
            let mean_return =
                (recent.len() >= window).then(|| recent.iter().sum::<f64>() / recent.len() as f64);
            // Where the update's time went: sampling (overlapping the
            // learner's in async mode) and learning, against the wall time
            // since the previous update's metrics (what follows here, a
            // checkpoint included, counts in the next update's).
            let now = Instant::now();
            let wall = (now - last_end).as_secs_f64().max(1e-9);
            last_end = now;
            let per_s = |n: f64, s: f64| if s > 0.0 { n / s } else { 0.0 };
            let mut metrics = vec![
                ("success_rate".to_string(), successes as f64 / n),
                ("return".to_string(), returns_sum / n),
                ("policy_loss".to_string(), loss_sum),
                ("approx_kl".to_string(), kl_sum),
                ("kl_reference".to_string(), kl_ref),
                ("grad_norm".to_string(), grad_norm),
                ("policy_lag".to_string(), lag as f64),
                ("value_loss".to_string(), value_loss),
                ("tokens_per_episode".to_string(), tokens / n),
                (
                    "generation_tokens_per_s".to_string(),
                    per_s(tokens, sampled.seconds),
                ),
                (
                    "sampling_share".to_string(),
                    (sampled.seconds / wall).min(1.0),
                ),
                ("learner_share".to_string(), (learn_s / wall).min(1.0)),
                (
                    "trained_tokens_per_s".to_string(),
                    per_s(trained_tokens, learn_s),
                ),
            ];
            if device.is_cuda()
                && let Some(mib) = crate::gpu::memory_used_mib()
            {
                metrics.push(("gpu_memory_mib".to_string(), mib));
            }
            if let Some(b) = &behaviour {
                // The new weights (or adapters) go to the samplers, between two
                // of their decoding steps.
                let m = model.lock().map_err(|_| bad("model poisoned".into()))?;
                let b = b.lock().map_err(|_| bad("model poisoned".into()))?;
                publish(
                    &trainable(&m, lora.is_some()),
                    &trainable(&b, lora.is_some()),
                );
            }
            sampler
                .version
                .store(update, std::sync::atomic::Ordering::Relaxed);
            writer.metrics(update, metrics.clone());
            let every = config.checkpoint.every;
            let checkpoint = if every > 0 && update.is_multiple_of(every) {
                // What is recorded up to here is committed before the checkpoint
                // that a resume starts from.
                writer.sync();
                let st = State::at(
                    config, update, episodes, env_steps, task, &recent, adam.step,
                );
                let m = model.lock().map_err(|_| bad("model poisoned".into()))?;
                st.save(&m, &adam, value_head.as_ref(), &latest)?;
                saved = Some(update);
                Some(latest.clone())
            } else {
                None
            };
            on_update(&UpdateReport {
                update,
                updates: config.stop.updates,
                env_steps,
                episodes,
                mean_return,
                metrics,
                checkpoint,
            });
            if let (Some(target), Some(m)) = (config.stop.mean_return, mean_return)
                && m >= target
            {
                reached = true;
                break;
            }
            // Stopped from another thread (the IDE): after this update, with
            // a checkpoint that `--resume` goes on from.
            if opts
                .stop
                .as_ref()
                .is_some_and(|s| s.load(std::sync::atomic::Ordering::Relaxed))
            {
                break;
            }
        }
        stopping.store(true, std::sync::atomic::Ordering::Relaxed);
        // The sampling thread ends at its next send.
        drop(source);
        Ok(())
    });
    drop(writer);
    let stopped = opts
        .stop
        .as_ref()
        .is_some_and(|s| s.load(std::sync::atomic::Ordering::Relaxed));
    let status = match &result {
        Ok(()) if stopped && !reached && update < config.stop.updates => "stopped",
        Ok(()) => "finished",
        Err(_) => "failed",
    };
    let finish = recorder.finish_training(status);
    result?;
    finish?;
    // The last update's checkpoint, unless it was just written.
    if saved != Some(update) {
        let st = State::at(
            config, update, episodes, env_steps, task, &recent, adam.step,
        );
        let m = model.lock().map_err(|_| bad("model poisoned".into()))?;
        st.save(&m, &adam, value_head.as_ref(), &latest)?;
    }
    let ck = latest;
    Ok(TrainSummary {
        run_id: config.name.clone(),
        db: opts.db.clone(),
        device: format!("{device:?}").to_lowercase(),
        updates: update,
        env_steps,
        episodes,
        mean_return: (!recent.is_empty()).then(|| recent.iter().sum::<f64>() / recent.len() as f64),
        reached_target: reached,
        seconds: started.elapsed().as_secs_f64(),
        samples_trained: episodes,
        envs: 1,
        env_busy_seconds: 0.0,
        checkpoint: ck,
    })
}

/// Where an LLM run stands at a checkpoint, beside the model's folder
/// (`trainer-state.json`, and the optimizer's moments in
/// `trainer-state.safetensors`): enough to go on exactly in sync mode.
#[derive(serde::Serialize, serde::Deserialize)]
struct State {
    run: String,
    update: u64,
    episodes: u64,
    env_steps: u64,
    /// Task seeds drawn so far.
    task: u64,
    recent: Vec<f64>,
    adam_step: i64,
}

impl State {
    /// Where the run stands after `update`.
    fn at(
        config: &Config,
        update: u64,
        episodes: u64,
        env_steps: u64,
        task: u64,
        recent: &std::collections::VecDeque<f64>,
        adam_step: i64,
    ) -> State {
        State {
            run: config.name.clone(),
            update,
            episodes,
            env_steps,
            task,
            recent: recent.iter().copied().collect(),
            adam_step,
        }
    }

    /// Writes the model, its tokenizer and this state to `dir`, replacing
    /// the previous checkpoint only once the new one is whole.
    fn save(
        &self,
        model: &PolicyModel,
        adam: &Adam,
        value_head: Option<&(Tensor, Tensor)>,
        dir: &Path,
    ) -> Result<(), TrainError> {
        let fail = |m: String| {
            TrainError::Checkpoint(CheckpointError {
                path: dir.to_path_buf(),
                message: m,
            })
        };
        let tmp = dir.with_extension("tmp");
        let _ = std::fs::remove_dir_all(&tmp);
        model.save(&tmp).map_err(fail)?;
        let moments: Vec<(String, Tensor)> = adam
            .m
            .iter()
            .enumerate()
            .map(|(i, t)| (format!("m.{i}"), t.to_device(tch::Device::Cpu)))
            .chain(
                adam.v
                    .iter()
                    .enumerate()
                    .map(|(i, t)| (format!("v.{i}"), t.to_device(tch::Device::Cpu))),
            )
            .chain(adam.master.iter().enumerate().filter_map(|(i, t)| {
                t.as_ref()
                    .map(|t| (format!("w.{i}"), t.to_device(tch::Device::Cpu)))
            }))
            .chain(value_head.into_iter().flat_map(|(w, b)| {
                [
                    (
                        "value_head.weight".to_string(),
                        w.detach().to_device(tch::Device::Cpu),
                    ),
                    (
                        "value_head.bias".to_string(),
                        b.detach().to_device(tch::Device::Cpu),
                    ),
                ]
            }))
            .collect();
        Tensor::write_safetensors(&moments, tmp.join("trainer-state.safetensors"))
            .map_err(|e| fail(e.to_string()))?;
        let json = serde_json::to_string(self).map_err(|e| fail(e.to_string()))?;
        std::fs::write(tmp.join("trainer-state.json"), json).map_err(|e| fail(e.to_string()))?;
        let old = dir.with_extension("old");
        let _ = std::fs::remove_dir_all(&old);
        if dir.exists() {
            std::fs::rename(dir, &old).map_err(|e| fail(e.to_string()))?;
        }
        std::fs::rename(&tmp, dir).map_err(|e| fail(e.to_string()))?;
        let _ = std::fs::remove_dir_all(&old);
        Ok(())
    }

    fn load(dir: &Path, run: &str) -> Result<State, TrainError> {
        let fail = |m: String| {
            TrainError::Checkpoint(CheckpointError {
                path: dir.to_path_buf(),
                message: m,
            })
        };
        let text = std::fs::read_to_string(dir.join("trainer-state.json")).map_err(|e| {
            fail(format!(
                "no trainer state to resume from ({e}); train without --resume"
            ))
        })?;
        let st: State = serde_json::from_str(&text).map_err(|e| fail(e.to_string()))?;
        if st.run != run {
            return Err(fail(format!(
                "it belongs to run `{}`; resume with the config that wrote it",
                st.run
            )));
        }
        Ok(st)
    }

    /// The optimizer's moments, into `adam`, and the value head's weights.
    fn restore(
        &self,
        dir: &Path,
        adam: &mut Adam,
        value_head: Option<&(Tensor, Tensor)>,
    ) -> Result<(), TrainError> {
        let read =
            Tensor::read_safetensors(dir.join("trainer-state.safetensors")).map_err(|e| {
                TrainError::Checkpoint(CheckpointError {
                    path: dir.to_path_buf(),
                    message: e.to_string(),
                })
            })?;
        let mut named: std::collections::HashMap<String, Tensor> = read.into_iter().collect();
        let mut values = |prefix: &str, n: usize| -> Vec<Vec<f32>> {
            (0..n)
                .map(|i| {
                    named
                        .remove(&format!("{prefix}.{i}"))
                        .and_then(|t| Vec::<f32>::try_from(&t.flatten(0, -1)).ok())
                        .unwrap_or_default()
                })
                .collect()
        };
        let (m, v) = (values("m", adam.m.len()), values("v", adam.v.len()));
        adam.load(&m, &v, self.adam_step);
        // The f32 master copies of bf16 weights.
        let w = values("w", adam.master.len());
        adam.load_masters(&w);
        if let Some((w, b)) = value_head {
            for (name, t) in [("value_head.weight", w), ("value_head.bias", b)] {
                let saved = named.remove(name).ok_or_else(|| {
                    TrainError::Checkpoint(CheckpointError {
                        path: dir.to_path_buf(),
                        message: format!(
                            "no `{name}`: the checkpoint was written without a value head"
                        ),
                    })
                })?;
                let mut t = t.shallow_clone();
                tch::no_grad(|| t.copy_(&saved.to_device(t.device())));
            }
        }
        Ok(())
    }
}
