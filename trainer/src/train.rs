//! A training run: loads the env, starts the samplers, runs the learner loop,
//! records metrics and episodes, saves checkpoints, and resumes from them.

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crossbeam_channel::Receiver;
use ludus_arena::model::Timing;
use ludus_arena::recorder::{FrameWriter, Recorder};
use ludus_arena::train_store::{ResumePoint, StepStat};
use ludus_arena::{Limits, LoadError, Plugin, PluginKind};
use tch::Device;

use crate::checkpoint::{self, Checkpoint, CheckpointError, EpisodeKey, Meta};
use crate::config::{Config, Mode};
use crate::learner::{self, Adam};
pub use crate::options::{
    DeviceChoice, TrainError, TrainOptions, TrainSummary, UpdateReport, checkpoint_dir, device,
};
use crate::policy::{Policy, Spec};
use crate::rng::{Rng, derive};
use crate::sampler::{self, SamplerMsg, SamplerSetup, SamplerState, Segment, Shared, Weights};

/// The env's policy spec, checking that the env loads and accepts its config.
pub fn load_env(config: &Config) -> Result<(Arc<Plugin>, Spec), TrainError> {
    let plugin = Plugin::load(&config.env.plugin, PluginKind::Env, Limits::DEFAULT)?;
    let mut env = plugin.env(0).map_err(|c| TrainError::Env(c.message))?;
    let info = match env.init(&config.env.config) {
        Ok(Ok(info)) => info,
        Ok(Err(message)) => {
            return Err(LoadError::Config {
                path: plugin.path.clone(),
                config: config.env.config.clone(),
                message: message.0,
            }
            .into());
        }
        Err(c) => return Err(TrainError::Env(c.message)),
    };
    let spec = Spec::from_config(&info, &config.policy)
        .map_err(|m| TrainError::Env(format!("cannot train on {}: {m}", plugin.name)))?;
    Ok((plugin, spec))
}

struct Run {
    update: u64,
    next_episode: u64,
    open: BTreeMap<EpisodeKey, (u64, u64)>,
    recent: VecDeque<f64>,
    env_steps: u64,
    episodes: u64,
    samplers: Option<Vec<SamplerState>>,
    samples_trained: u64,
}

/// Trains as configured, calling `on_update` after every update.
pub fn train(
    opts: &TrainOptions,
    on_update: &mut dyn FnMut(&UpdateReport),
) -> Result<TrainSummary, TrainError> {
    if opts.config.policy.kind == crate::config::PolicyKind::Llm {
        return crate::llm::grpo::train(opts, on_update);
    }
    let started = Instant::now();
    let config = Arc::new(opts.config.clone());
    let device = device(opts.device)?;
    // One intra-op thread: samplers and the learner already use every core,
    // and reductions stay deterministic.
    tch::set_num_threads(1);
    let (plugin, spec) = load_env(&config)?;
    let ck_dir = checkpoint_dir(&config, &opts.db);
    let latest = ck_dir.join("latest.safetensors");
    let mut lrng;
    let mut policy;
    let mut adam;
    let mut run;
    if opts.resume {
        let ck = checkpoint::load(&latest)?;
        if ck.meta.run != config.name || ck.meta.spec != spec {
            return Err(CheckpointError {
                path: latest.clone(),
                message: format!(
                    "it belongs to run `{}` with another policy shape; resume with the config that wrote it",
                    ck.meta.run
                ),
            }
            .into());
        }
        let values: Vec<Vec<f32>> = ck.params.iter().map(|p| p.1.clone()).collect();
        policy = Policy::from_values(spec.clone(), &values, device);
        adam = Adam::new(&policy.params);
        adam.load(&ck.adam_m, &ck.adam_v, ck.meta.adam_step);
        lrng = ck.meta.learner_rng;
        let sync = config.sampling.mode == Mode::Sync;
        run = Run {
            update: ck.meta.update,
            next_episode: ck.meta.next_episode,
            open: if sync {
                ck.meta
                    .open_episodes
                    .iter()
                    .map(|&(k, idx, steps)| (k, (idx, steps)))
                    .collect()
            } else {
                BTreeMap::new()
            },
            recent: ck.meta.recent_returns.iter().copied().collect(),
            env_steps: ck.meta.env_steps,
            episodes: ck.meta.next_episode,
            samplers: if sync { ck.meta.samplers.clone() } else { None },
            samples_trained: 0,
        };
    } else {
        policy = Policy::new(spec.clone(), derive(config.seed, &[4]), device);
        adam = Adam::new(&policy.params);
        lrng = Rng::new(derive(config.seed, &[5]));
        run = Run {
            update: 0,
            next_episode: 0,
            open: BTreeMap::new(),
            recent: VecDeque::new(),
            env_steps: 0,
            episodes: 0,
            samplers: None,
            samples_trained: 0,
        };
    }
    if config.checkpoint.keep_all && !opts.resume {
        // The initial weights too, so every recorded step's policy can be reloaded.
        save(
            &config,
            &policy,
            &adam,
            &lrng,
            &run,
            &ck_dir.join("update-0.safetensors"),
        )?;
    }
    let resume_point = opts.resume.then(|| ResumePoint {
        update: run.update,
        next_episode: run.next_episode,
        open: run.open.values().copied().collect(),
    });
    let spec_json = serde_json::json!({
        "kind": "train",
        "config": &*config,
        "env": { "path": plugin.path, "hash": plugin.hash },
        "policy": &spec,
    });
    let recorder = Recorder::start_training(
        &opts.db,
        &config.name,
        config.seed,
        &spec_json,
        resume_point.as_ref(),
    )?;
    // Async: while the learner updates, samplers fill the next batch and then
    // wait, rather than pile up data that would only go stale (so a batch is
    // about one update old). Bounded in steps, not segments: a one-step
    // episode is a whole segment.
    let shared = Arc::new(Shared::new(
        Weights {
            version: run.update,
            values: policy.values(),
        },
        config.sampling.batch_steps,
    ));
    let envs = config.sampling.samplers * config.sampling.envs_per_sampler;
    let (tx, rx) = crossbeam_channel::unbounded();
    let mut handles = Vec::new();
    for i in 0..config.sampling.samplers {
        let state = run.samplers.as_ref().and_then(|s| s.get(i).cloned());
        let state = state.or_else(|| {
            // Async resume: fresh episodes, numbered past the old ones.
            (run.update > 0).then(|| SamplerState {
                rng: Rng::new(derive(config.seed, &[6, run.update, i as u64])),
                slots: (0..config.sampling.envs_per_sampler)
                    .map(|_| sampler::SlotState {
                        counter: run.update << 20,
                        actions: Vec::new(),
                    })
                    .collect(),
            })
        });
        let h = sampler::spawn(SamplerSetup {
            index: i,
            plugin: plugin.clone(),
            config: config.clone(),
            spec: spec.clone(),
            state,
            shared: shared.clone(),
            tx: tx.clone(),
        })
        .map_err(|e| TrainError::Env(format!("cannot start a sampler thread: {e}")))?;
        handles.push(h);
    }
    drop(tx);
    let mut writer = recorder.writer();
    let result = learn(
        &config,
        &opts.db,
        &ck_dir,
        &mut policy,
        &mut adam,
        &mut lrng,
        &mut run,
        &shared,
        &rx,
        &mut writer,
        opts.stop.as_deref(),
        on_update,
    );
    shared.stop();
    drop(rx);
    for h in handles {
        let _ = h.join();
    }
    let stopped = opts
        .stop
        .as_ref()
        .is_some_and(|s| s.load(Ordering::Relaxed));
    let status = match &result {
        Ok(false) if stopped && run.update < config.stop.updates => "stopped",
        Ok(_) => "finished",
        Err(_) => "failed",
    };
    // The writer sends what it holds; the recorder then commits the rest.
    drop(writer);
    let finish = recorder.finish_training(status);
    let reached = result?;
    finish?;
    Ok(TrainSummary {
        run_id: config.name.clone(),
        db: opts.db.clone(),
        device: format!("{device:?}").to_lowercase(),
        updates: run.update,
        env_steps: run.env_steps,
        episodes: run.episodes,
        mean_return: mean(&run.recent),
        reached_target: reached,
        seconds: started.elapsed().as_secs_f64(),
        samples_trained: run.samples_trained,
        envs,
        env_busy_seconds: shared.env_busy_ns.load(Ordering::Relaxed) as f64 / 1e9,
        checkpoint: latest,
    })
}

fn mean(v: &VecDeque<f64>) -> Option<f64> {
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

/// Waits for the next batch: in sync mode a full round from every sampler, in
/// async mode the oldest ready segments once there are at least `batch_steps`
/// trainable steps, about `batch_steps` of them (whole groups only, for
/// group-relative advantages); the rest wait for the next update. Steps past
/// the lag bound ride along to be recorded but do not count: every update
/// trains on fresh data, and its policy version moves only then.
fn gather(
    config: &Config,
    rx: &Receiver<SamplerMsg>,
    pending: &mut Vec<Segment>,
    states: &mut [Option<SamplerState>],
    version: u64,
    shared: &Shared,
) -> Result<Option<Vec<Segment>>, TrainError> {
    let sync = config.sampling.mode == Mode::Sync;
    let g = config.group_size();
    let max_lag = config.sampling.max_policy_lag;
    let fresh = |s: &Segment| {
        s.versions
            .iter()
            .filter(|&&v| version.saturating_sub(v) <= max_lag)
            .count()
    };
    let mut rounds = 0;
    loop {
        let ready_steps: usize = if sync {
            0
        } else {
            ready(pending, g).iter().map(|&i| fresh(&pending[i])).sum()
        };
        let done = if sync {
            rounds == config.sampling.samplers
        } else {
            ready_steps >= config.sampling.batch_steps
        };
        if done {
            let take = if sync {
                (0..pending.len()).collect()
            } else {
                oldest(
                    pending,
                    &ready(pending, g),
                    g,
                    config.sampling.batch_steps,
                    &fresh,
                )
            };
            let mut batch = Vec::with_capacity(take.len());
            let mut rest = Vec::new();
            for (i, s) in pending.drain(..).enumerate() {
                if take.binary_search(&i).is_ok() {
                    batch.push(s);
                } else {
                    rest.push(s);
                }
            }
            *pending = rest;
            batch.sort_by_key(|s| (s.sampler, s.slot, s.counter, s.first_step));
            return Ok(Some(batch));
        }
        // Block for one message, then take everything already queued.
        shared.hungry();
        let Ok(first) = rx.recv() else {
            return Ok(None);
        };
        let mut msg = Some(first);
        while let Some(m) = msg.take() {
            match m {
                SamplerMsg::Segment(s) => pending.push(*s),
                SamplerMsg::RoundEnd { sampler, state } => {
                    if let Some(slot) = states.get_mut(sampler) {
                        *slot = Some(state);
                    }
                    rounds += 1;
                }
                SamplerMsg::Failed { sampler, message } => {
                    return Err(TrainError::Sampler { sampler, message });
                }
            }
            if !sync {
                msg = rx.try_recv().ok();
            }
        }
    }
}

/// Of the `ready` indices (sorted, in arrival order), the first ones up to
/// `steps` steps (as `count` counts them), with every segment of a group
/// taken together.
fn oldest(
    pending: &[Segment],
    ready: &[usize],
    group: usize,
    steps: usize,
    count: &dyn Fn(&Segment) -> usize,
) -> Vec<usize> {
    let mut groups = std::collections::BTreeSet::new();
    let (mut take, mut taken) = (Vec::new(), 0);
    for &i in ready {
        let s = &pending[i];
        let key = (s.sampler, s.group, s.counter);
        let more = if group > 1 && groups.contains(&key) {
            true
        } else if taken < steps {
            groups.insert(key);
            true
        } else {
            false
        };
        if more {
            take.push(i);
            taken += count(s);
        }
    }
    take
}

/// Indices (sorted) of pending segments that can be trained on now.
fn ready(pending: &[Segment], group: usize) -> Vec<usize> {
    if group <= 1 {
        return (0..pending.len()).collect();
    }
    let mut count: BTreeMap<(usize, usize, u64), usize> = BTreeMap::new();
    for s in pending {
        *count.entry((s.sampler, s.group, s.counter)).or_default() += 1;
    }
    (0..pending.len())
        .filter(|&i| {
            let s = &pending[i];
            count
                .get(&(s.sampler, s.group, s.counter))
                .copied()
                .unwrap_or(0)
                >= group
        })
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn learn(
    config: &Config,
    db: &Path,
    ck_dir: &Path,
    policy: &mut Policy,
    adam: &mut Adam,
    lrng: &mut Rng,
    run: &mut Run,
    shared: &Shared,
    rx: &Receiver<SamplerMsg>,
    writer: &mut FrameWriter,
    stop: Option<&AtomicBool>,
    on_update: &mut dyn FnMut(&UpdateReport),
) -> Result<bool, TrainError> {
    let _ = db;
    let n_envs = (config.sampling.samplers * config.sampling.envs_per_sampler) as f64;
    let mut pending = Vec::new();
    let mut states: Vec<Option<SamplerState>> = vec![None; config.sampling.samplers];
    let mut last = Instant::now();
    let mut last_busy = shared.env_busy_ns.load(Ordering::Relaxed);
    let mut last_steps = shared.env_steps.load(Ordering::Relaxed);
    while run.update < config.stop.updates {
        let Some(batch) = gather(config, rx, &mut pending, &mut states, run.update, shared)? else {
            break;
        };
        shared.take(batch.iter().map(Segment::len).sum());
        let learn_start = Instant::now();
        let version = run.update;
        let lr = learner::learning_rate(config, version + 1);
        let (stats, outcome) = learner::update(config, policy, adam, lrng, &batch, version, lr);
        run.update += 1;
        shared.publish(Weights {
            version: run.update,
            values: policy.values(),
        });
        let learn_s = learn_start.elapsed().as_secs_f64();
        // Episodes: numbering, recording, returns.
        let (mut returns, mut lengths, mut successes) = (Vec::new(), Vec::new(), 0usize);
        for (si, s) in batch.into_iter().enumerate() {
            let key = (s.sampler, s.slot, s.counter);
            let idx = match run.open.get(&key) {
                Some(&(idx, _)) => idx,
                None => {
                    let idx = run.next_episode;
                    run.next_episode += 1;
                    idx
                }
            };
            let recorded = s.first_step + s.len() as u64;
            if let Some(end) = &s.end {
                run.open.remove(&key);
                returns.push(end.return_);
                lengths.push(end.length as f64);
                successes += usize::from(end.success);
                run.recent.push_back(end.return_);
                while run.recent.len() > config.stop.window {
                    run.recent.pop_front();
                }
                run.episodes += 1;
            } else {
                run.open.insert(key, (idx, recorded));
            }
            if config.sampling.record {
                let stats: Vec<StepStat> = (0..s.len())
                    .map(|k| StepStat {
                        version: s.versions[k],
                        log_prob: s.log_probs[k],
                        value: s.values[k],
                        advantage: outcome.advantages[si][k],
                        lag: outcome.lags[si][k],
                    })
                    .collect();
                if s.first_step == 0 {
                    writer.start(idx, s.seed);
                }
                for (k, frame) in s.frames.iter().enumerate() {
                    let timing = Timing {
                        step_ns: s.step_ns.get(k).copied().unwrap_or(0),
                        ..Timing::default()
                    };
                    writer.push(idx, frame, timing);
                }
                writer.step_stats(idx, s.first_step, &stats);
                if let Some(end) = s.end {
                    writer.end(idx, end);
                }
            }
        }
        // Metrics.
        let now = Instant::now();
        let wall = now.duration_since(last).as_secs_f64().max(1e-9);
        let busy = shared.env_busy_ns.load(Ordering::Relaxed);
        let steps = shared.env_steps.load(Ordering::Relaxed);
        let new_steps = steps - last_steps;
        run.env_steps += stats.samples as u64 + stats.dropped as u64;
        run.samples_trained += stats.samples as u64;
        let mut m: Vec<(String, f64)> = Vec::new();
        let mut put = |name: &str, v: f64| m.push((name.to_string(), v));
        if !returns.is_empty() {
            let k = returns.len() as f64;
            put("return", returns.iter().sum::<f64>() / k);
            put("episode_length", lengths.iter().sum::<f64>() / k);
            put("success_rate", successes as f64 / k);
        }
        put("episodes", returns.len() as f64);
        if let Some(r) = mean(&run.recent) {
            put("return_window", r);
        }
        put("policy_loss", stats.policy_loss);
        if config.algorithm.value_loss {
            put("value_loss", stats.value_loss);
        }
        put("entropy", stats.entropy);
        put("approx_kl", stats.approx_kl);
        put("clip_fraction", stats.clip_fraction);
        put("grad_norm", stats.grad_norm);
        put("lr", lr);
        put("samples", stats.samples as f64);
        put("dropped_samples", stats.dropped as f64);
        put("policy_lag", stats.lag_mean);
        put("policy_lag_max", stats.lag_max as f64);
        put("env_steps", run.env_steps as f64);
        put("env_steps_per_s", new_steps as f64 / wall);
        put("learner_samples_per_s", stats.samples as f64 / wall);
        put("updates_per_s", 1.0 / wall);
        put(
            "env_utilisation",
            ((busy - last_busy) as f64 / 1e9 / (n_envs * wall)).min(1.0),
        );
        put("learner_share", (learn_s / wall).min(1.0));
        let on_gpu = policy.device != Device::Cpu;
        put(
            "gpu_share",
            if on_gpu {
                (learn_s / wall).min(1.0)
            } else {
                0.0
            },
        );
        last = now;
        last_busy = busy;
        last_steps = steps;
        writer.metrics(run.update, m.clone());
        writer.flush();
        let mean_return = mean(&run.recent);
        let reached = match config.stop.mean_return {
            Some(target) => {
                run.recent.len() >= config.stop.window && mean_return.is_some_and(|r| r >= target)
            }
            None => false,
        };
        let stopping = stop.is_some_and(|s| s.load(Ordering::Relaxed));
        let last_update = reached || stopping || run.update >= config.stop.updates;
        let every = config.checkpoint.every;
        let checkpoint = if last_update || (every > 0 && run.update.is_multiple_of(every)) {
            if config.sampling.mode == Mode::Sync {
                run.samplers = states.iter().cloned().collect::<Option<Vec<_>>>();
            }
            // What the checkpoint counts as recorded must be on disk first.
            writer.sync();
            let path = ck_dir.join("latest.safetensors");
            save(config, policy, adam, lrng, run, &path)?;
            if config.checkpoint.keep_all {
                let _ = std::fs::copy(
                    &path,
                    ck_dir.join(format!("update-{}.safetensors", run.update)),
                );
            }
            Some(path)
        } else {
            None
        };
        on_update(&UpdateReport {
            update: run.update,
            updates: config.stop.updates,
            env_steps: run.env_steps,
            episodes: run.episodes,
            mean_return,
            metrics: m,
            checkpoint,
        });
        if reached || stopping {
            return Ok(reached);
        }
    }
    Ok(false)
}

fn save(
    config: &Config,
    policy: &Policy,
    adam: &Adam,
    lrng: &Rng,
    run: &Run,
    path: &Path,
) -> Result<(), TrainError> {
    let values = policy.values();
    let ck = Checkpoint {
        meta: Meta {
            format: checkpoint::FORMAT,
            run: config.name.clone(),
            update: run.update,
            adam_step: adam.step,
            learner_rng: *lrng,
            spec: policy.spec.clone(),
            samplers: run.samplers.clone(),
            next_episode: run.next_episode,
            open_episodes: run.open.iter().map(|(k, v)| (*k, v.0, v.1)).collect(),
            recent_returns: run.recent.iter().copied().collect(),
            env_steps: run.env_steps,
        },
        params: policy.names.iter().cloned().zip(values).collect(),
        adam_m: Adam::values(&adam.m),
        adam_v: Adam::values(&adam.v),
    };
    checkpoint::save(path, &ck)?;
    Ok(())
}
