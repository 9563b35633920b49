//! Training the language model an LLM agent calls (`policy.kind = "llm"`):
//! GRPO in sync mode. Each update plays groups of episodes through the
//! agent plugin, the episodes of a group on the same task seed (their model
//! calls sample apart through the run's salt); every call keeps the token
//! ids it read and generated and their log-probabilities, so the learner
//! trains on exactly the sampled tokens; the loss is PPO's clipped surrogate
//! on generated tokens, averaged per episode, then over episodes.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use ludus_arena::Limits;
use ludus_arena::chat::{ChatRequest, LiveAnswer, ModelClient, ModelError, ModelSetup};
use ludus_arena::memory::MemoryBase;
use ludus_arena::model::Observation;
use ludus_arena::recorder::Recorder;
use ludus_arena::run::{AgentSpec, PluginSpec, RunSpec, Stepper, prepare};
use ludus_arena::train_store::{ResumePoint, StepStat};
use ludus_core::episode_seed;
use tch::{Kind, Tensor};

use super::backend::PolicyModel;
use crate::advantage::group_relative;
use crate::checkpoint::CheckpointError;
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

/// The model, answering the episodes' calls and keeping what they sampled.
struct Sampler {
    model: Arc<Mutex<PolicyModel>>,
    calls: Mutex<Vec<Sampled>>,
    generated_tokens: Mutex<(u64, f64)>,
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
        let result = match self.model.lock() {
            Ok(m) => m.answer(&asked, seed).map(|(mut response, g)| {
                let v = self.version.load(std::sync::atomic::Ordering::Relaxed);
                response.model = format!("{}@v{v}", response.model);
                if let Ok(mut calls) = self.calls.lock() {
                    calls.push(Sampled {
                        prompt: g.prompt_ids,
                        generated: g.ids,
                        logprobs: g.logprobs,
                    });
                }
                response
            }),
            Err(_) => Err(ModelError::Unavailable(
                "the model failed in an earlier call".into(),
            )),
        };
        let seconds = started.elapsed().as_secs_f64();
        if let (Ok(r), Ok(mut t)) = (&result, self.generated_tokens.lock()) {
            t.0 += u64::from(r.completion_tokens);
            t.1 += seconds;
        }
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
    let weights = if resumed.is_some() {
        &latest
    } else {
        &model_path
    };
    let mut model = PolicyModel::open(weights, device).map_err(|e| bad(e.to_string()))?;
    // Answers name the model as configured, resumed or not.
    if let Some(stem) = model_path.file_stem() {
        model.name = stem.to_string_lossy().into_owned();
    }
    // The frozen reference a KL penalty holds the policy to: the model as
    // it was loaded.
    let reference = if config.algorithm.kl_coef > 0.0 {
        Some(PolicyModel::open(&model_path, device).map_err(|e| bad(e.to_string()))?)
    } else {
        None
    };
    model.llama.set_trainable(true);
    let mut params = model.llama.params();
    let mut adam = Adam::new(&params);
    if let Some(st) = &resumed {
        st.restore(&latest, &mut adam)?;
    }
    let model = Arc::new(Mutex::new(model));
    let sampler = Arc::new(Sampler {
        model: model.clone(),
        calls: Mutex::new(Vec::new()),
        generated_tokens: Mutex::new((0, 0.0)),
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
    let mut prepared = prepare(RunSpec {
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
    })
    .map_err(|e| bad(e.to_string()))?;
    let group = config.algorithm.group_size.max(1);
    let per_update = (config.sampling.samplers * config.sampling.envs_per_sampler).max(group);
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
    while update < config.stop.updates {
        update += 1;
        let mut batch: Vec<(f32, Vec<Sampled>)> = Vec::new();
        let (mut successes, mut returns_sum) = (0u64, 0f64);
        for _ in 0..groups {
            let seed = episode_seed(config.seed, task);
            task += 1;
            let mut played = Vec::new();
            for member in 0..group {
                prepared.spec.models.salt = member as u64 + 1;
                let mut frames = Vec::new();
                let finish = match Stepper::start(&prepared, seed, memory.clone()) {
                    Ok(mut stepper) => {
                        while let Some(frame) = stepper.step(None) {
                            frames.push(frame);
                        }
                        stepper.finish()
                    }
                    Err(finish) => *finish,
                };
                env_steps += finish.length;
                successes += u64::from(finish.success);
                returns_sum += finish.return_;
                recent.push_back(finish.return_);
                while recent.len() > window {
                    recent.pop_front();
                }
                let calls = std::mem::take(
                    &mut *sampler
                        .calls
                        .lock()
                        .map_err(|_| bad("sampler poisoned".into()))?,
                );
                played.push((episodes, frames, finish, calls));
                episodes += 1;
            }
            let returns: Vec<f64> = played.iter().map(|p| p.2.return_).collect();
            for ((idx, frames, finish, calls), a) in
                played.into_iter().zip(group_relative(&returns))
            {
                // Recorded like any sampled episode: frames (with each call's
                // tokens, log-probabilities and policy version), then a row
                // per step with the advantage it was trained with.
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
                        version: update - 1,
                        log_prob,
                        value: 0.0,
                        advantage: Some(a),
                        lag: 0,
                    });
                }
                writer.step_stats(idx, 0, &stats);
                writer.end(idx, finish);
                batch.push((a, calls));
            }
        }
        let lr = learning_rate(config, update);
        let clip = config.algorithm.clip;
        let (mut loss_sum, mut kl_sum, mut grad_norm, mut kl_ref) = (0f64, 0f64, 0f64, 0f64);
        let epochs = config.algorithm.epochs.max(1);
        let signal = batch
            .iter()
            .any(|(a, c)| *a != 0.0 && c.iter().any(|s| !s.generated.is_empty()));
        if signal {
            let m = model.lock().map_err(|_| bad("model poisoned".into()))?;
            for _ in 0..epochs {
                let mut terms = Vec::new();
                let mut kls = Vec::new();
                let mut ref_kls: Vec<Tensor> = Vec::new();
                for (advantage, calls) in &batch {
                    let mut new_lp = Vec::new();
                    let mut old_lp = Vec::new();
                    for c in calls.iter().filter(|c| !c.generated.is_empty()) {
                        new_lp.push(m.llama.logprobs_of(&c.prompt, &c.generated));
                        old_lp.extend_from_slice(&c.logprobs);
                    }
                    if new_lp.is_empty() {
                        continue;
                    }
                    let new_lp = Tensor::cat(&new_lp, 0);
                    let old_lp = Tensor::from_slice(&old_lp).to_device(device);
                    let ratio = (&new_lp - &old_lp).exp();
                    let a = f64::from(*advantage);
                    let surrogate =
                        (&ratio * a).min_other(&(ratio.clamp(1.0 - clip, 1.0 + clip) * a));
                    let term = -surrogate.mean(Kind::Float);
                    let mut penalty = None;
                    if let Some(r) = &reference {
                        // The k3 estimator of KL(policy || reference), per token.
                        let ref_lp = tch::no_grad(|| {
                            let parts: Vec<Tensor> = calls
                                .iter()
                                .filter(|c| !c.generated.is_empty())
                                .map(|c| r.llama.logprobs_of(&c.prompt, &c.generated))
                                .collect();
                            Tensor::cat(&parts, 0)
                        });
                        let d = ref_lp - &new_lp;
                        let k3 = (d.exp() - &d - 1.0).mean(Kind::Float);
                        ref_kls.push(k3.detach());
                        penalty = Some(k3 * config.algorithm.kl_coef);
                    }
                    terms.push(match penalty {
                        Some(p) => &term + p,
                        None => term,
                    });
                    kls.push((old_lp - new_lp.detach()).mean(Kind::Float));
                }
                if terms.is_empty() {
                    break;
                }
                let loss = Tensor::stack(&terms, 0).mean(Kind::Float);
                loss.backward();
                loss_sum = loss.double_value(&[]);
                kl_sum = Tensor::stack(&kls, 0).mean(Kind::Float).double_value(&[]);
                if !ref_kls.is_empty() {
                    kl_ref = Tensor::stack(&ref_kls, 0)
                        .mean(Kind::Float)
                        .double_value(&[]);
                }
                grad_norm = adam.step(&mut params, lr, config.optimizer.max_grad_norm);
            }
        }
        let n = (groups * group) as f64;
        let mean_return =
            (recent.len() >= window).then(|| recent.iter().sum::<f64>() / recent.len() as f64);
        let (tokens, seconds) = sampler
            .generated_tokens
            .lock()
            .map(|t| *t)
            .unwrap_or((0, 0.0));
        let metrics = vec![
            ("success_rate".to_string(), successes as f64 / n),
            ("return".to_string(), returns_sum / n),
            ("policy_loss".to_string(), loss_sum),
            ("approx_kl".to_string(), kl_sum),
            ("kl_reference".to_string(), kl_ref),
            ("grad_norm".to_string(), grad_norm),
            (
                "tokens_per_episode".to_string(),
                batch
                    .iter()
                    .map(|(_, c)| c.iter().map(|s| s.generated.len()).sum::<usize>())
                    .sum::<usize>() as f64
                    / n,
            ),
            (
                "generation_tokens_per_s".to_string(),
                if seconds > 0.0 {
                    tokens as f64 / seconds
                } else {
                    0.0
                },
            ),
        ];
        sampler
            .version
            .store(update, std::sync::atomic::Ordering::Relaxed);
        writer.metrics(update, metrics.clone());
        let every = config.checkpoint.every;
        let checkpoint = if every > 0 && update.is_multiple_of(every) {
            // What is recorded up to here is committed before the checkpoint
            // that a resume starts from.
            writer.sync();
            let st = State {
                run: config.name.clone(),
                update,
                episodes,
                env_steps,
                task,
                recent: recent.iter().copied().collect(),
                adam_step: adam.step,
            };
            let m = model.lock().map_err(|_| bad("model poisoned".into()))?;
            st.save(&m, &adam, &latest)?;
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
    }
    drop(writer);
    recorder.finish_training("finished")?;
    let st = State {
        run: config.name.clone(),
        update,
        episodes,
        env_steps,
        task,
        recent: recent.iter().copied().collect(),
        adam_step: adam.step,
    };
    st.save(
        &*model.lock().map_err(|_| bad("model poisoned".into()))?,
        &adam,
        &latest,
    )?;
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
    /// Writes the model, its tokenizer and this state to `dir`, replacing
    /// the previous checkpoint only once the new one is whole.
    fn save(&self, model: &PolicyModel, adam: &Adam, dir: &Path) -> Result<(), TrainError> {
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

    /// The optimizer's moments, into `adam`.
    fn restore(&self, dir: &Path, adam: &mut Adam) -> Result<(), TrainError> {
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
        Ok(())
    }
}
