//! Sampler threads: each runs many wasm env instances with a CPU copy of the
//! policy, streams trajectory segments to the learner, and picks up new
//! weights when they are published.
//!
//! Decoupled (async) mode: every env steps as soon as it is ready (an env
//! with a step delay is busy for that long), so a slow env never holds up the
//! others, and sampling goes on while the learner updates, up to a bound on
//! the steps the learner has not trained on yet.
//!
//! Sync mode is the classic coupled loop, as a vectorised env runs it: the
//! envs of a sampler step in lockstep (each step waits for the slowest env),
//! a round ends when every env has done its steps (or, for whole-episode
//! algorithms, its episode), and nothing steps while the learner updates.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use ludus_arena::Plugin;
use ludus_arena::episode::EpisodeTracker;
use ludus_arena::model::{Frame, Observation};
use ludus_arena::plugin::EnvInstance;
use ludus_arena::recorder::EpisodeFinish;
use ludus_arena::run::Outcome;
use serde::{Deserialize, Serialize};
use tch::Device;

use crate::config::{Config, Mode};
use crate::policy::{Policy, Spec};
use crate::rng::{Rng, derive};

/// A contiguous piece of one episode, as the sampler saw it.
#[derive(Clone, Debug)]
pub struct Segment {
    pub sampler: usize,
    pub slot: usize,
    /// The slot's episode counter (with `group`, which episodes share a seed).
    pub counter: u64,
    pub group: usize,
    pub seed: u64,
    pub task: String,
    pub first_step: u64,
    pub features: Vec<f32>,
    pub actions: Vec<f32>,
    pub log_probs: Vec<f32>,
    pub values: Vec<f32>,
    pub rewards: Vec<f32>,
    pub versions: Vec<u64>,
    /// Features after the last step (for bootstrapping), unless the episode terminated.
    pub next_features: Option<Vec<f32>>,
    /// Set on the episode's last segment.
    pub end: Option<EpisodeFinish>,
    /// Recorded frames (empty when recording is off).
    pub frames: Vec<Frame>,
    pub step_ns: Vec<u64>,
}

impl Segment {
    pub fn len(&self) -> usize {
        self.rewards.len()
    }
    pub fn is_empty(&self) -> bool {
        self.rewards.is_empty()
    }
}

/// A slot's episode in progress, enough to rebuild it on resume by replaying
/// its actions from the seed (envs are deterministic given seed and actions);
/// the return and success come back with the replay. Checkpoints written
/// before carry `return_` and `success` too, which loading ignores.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SlotState {
    pub counter: u64,
    pub actions: Vec<Vec<f32>>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SamplerState {
    pub rng: Rng,
    pub slots: Vec<SlotState>,
}

pub enum SamplerMsg {
    Segment(Box<Segment>),
    /// Sync mode: the sampler finished its round and waits for new weights.
    RoundEnd {
        sampler: usize,
        state: SamplerState,
    },
    Failed {
        sampler: usize,
        message: String,
    },
}

/// Published weights.
pub struct Weights {
    pub version: u64,
    pub values: Vec<Vec<f32>>,
}

/// What the learner and the samplers share.
pub struct Shared {
    weights: Mutex<Arc<Weights>>,
    changed: Condvar,
    version: AtomicU64,
    stop: AtomicBool,
    /// Nanoseconds envs spent stepping (including their step delay), summed over envs.
    pub env_busy_ns: AtomicU64,
    pub env_steps: AtomicU64,
    /// Steps sent to the learner and not yet taken into a batch.
    untrained: AtomicUsize,
    /// Set while the learner waits for data it does not have yet.
    hungry: AtomicBool,
    /// Async mode: samplers wait once this many steps are untrained, rather
    /// than produce data that would go stale; never while the learner is
    /// hungry, so whole groups can always complete.
    max_untrained: usize,
}

impl Shared {
    pub fn new(weights: Weights, max_untrained: usize) -> Shared {
        Shared {
            untrained: AtomicUsize::new(0),
            hungry: AtomicBool::new(false),
            max_untrained,
            version: AtomicU64::new(weights.version),
            weights: Mutex::new(Arc::new(weights)),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
            env_busy_ns: AtomicU64::new(0),
            env_steps: AtomicU64::new(0),
        }
    }

    pub fn publish(&self, weights: Weights) {
        let version = weights.version;
        let mut w = self.weights.lock().unwrap_or_else(|e| e.into_inner());
        *w = Arc::new(weights);
        self.version.store(version, Ordering::Release);
        self.changed.notify_all();
    }

    /// The learner is about to wait for data: samplers may go past the bound.
    pub fn hungry(&self) {
        if !self.hungry.swap(true, Ordering::AcqRel) {
            let _w = self.weights.lock().unwrap_or_else(|e| e.into_inner());
            self.changed.notify_all();
        }
    }

    /// The learner took `steps` into a batch.
    pub fn take(&self, steps: usize) {
        let _ = self
            .untrained
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                Some(u.saturating_sub(steps))
            });
        self.hungry.store(false, Ordering::Release);
    }

    /// Async mode: waits while too much untrained data is queued.
    fn throttle(&self) {
        let over = || {
            !self.hungry.load(Ordering::Acquire)
                && self.untrained.load(Ordering::Acquire) >= self.max_untrained
                && !self.stopped()
        };
        if !over() {
            return;
        }
        let mut w = self.weights.lock().unwrap_or_else(|e| e.into_inner());
        while over() {
            w = self.changed.wait(w).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn sent(&self, steps: usize) {
        self.untrained.fetch_add(steps, Ordering::AcqRel);
    }

    pub fn stop(&self) {
        // Under the lock, so a sampler between its check and its wait sees it.
        let _w = self.weights.lock().unwrap_or_else(|e| e.into_inner());
        self.stop.store(true, Ordering::Release);
        self.changed.notify_all();
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    fn latest(&self) -> Arc<Weights> {
        self.weights
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Blocks until weights newer than `version` are published (or stop).
    fn wait_newer(&self, version: u64) -> Option<Arc<Weights>> {
        let mut w = self.weights.lock().unwrap_or_else(|e| e.into_inner());
        while w.version <= version && !self.stopped() {
            w = self.changed.wait(w).unwrap_or_else(|e| e.into_inner());
        }
        (!self.stopped()).then(|| w.clone())
    }
}

pub struct SamplerSetup {
    pub index: usize,
    pub plugin: Arc<Plugin>,
    pub config: Arc<Config>,
    pub spec: Spec,
    pub state: Option<SamplerState>,
    pub shared: Arc<Shared>,
    pub tx: Sender<SamplerMsg>,
}

struct Slot {
    env: EnvInstance,
    /// The episode's account, as `ludus run`'s Stepper keeps it.
    tracker: EpisodeTracker,
    state: SlotState,
    seed: u64,
    task: String,
    reset_info: String,
    obs: Observation,
    features: Vec<f32>,
    ready_at: Instant,
    round_steps: usize,
    round_done: bool,
    seg: Segment,
}

/// Starts a sampler thread.
pub fn spawn(setup: SamplerSetup) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("ludus-sampler-{}", setup.index))
        .spawn(move || {
            let (index, tx) = (setup.index, setup.tx.clone());
            if let Err(message) = run(setup) {
                let _ = tx.send(SamplerMsg::Failed {
                    sampler: index,
                    message,
                });
            }
        })
}

struct Ctx {
    index: usize,
    plugin: Arc<Plugin>,
    config: Arc<Config>,
    spec: Spec,
}

impl Ctx {
    fn group_of(&self, slot: usize) -> usize {
        slot / self.config.group_size()
    }

    fn seed(&self, slot: usize, counter: u64) -> u64 {
        derive(
            self.config.seed,
            &[1, self.index as u64, self.group_of(slot) as u64, counter],
        )
    }

    /// A fresh env instance and its declared step limit.
    fn new_env(&self, seed: u64) -> Result<(EnvInstance, u32), String> {
        let mut env = self.plugin.env(seed).map_err(|c| c.message)?;
        match env.init(&self.config.env.config) {
            Ok(Ok(info)) => Ok((env, info.max_steps)),
            Ok(Err(m)) => Err(format!(
                "env {} rejected its config `{}`: {m}",
                self.plugin.name, self.config.env.config
            )),
            Err(c) => Err(c.message),
        }
    }

    fn empty_segment(&self, slot: usize, state: &SlotState, seed: u64, task: &str) -> Segment {
        Segment {
            sampler: self.index,
            slot,
            counter: state.counter,
            group: self.group_of(slot),
            seed,
            task: task.to_string(),
            first_step: state.actions.len() as u64,
            features: Vec::new(),
            actions: Vec::new(),
            log_probs: Vec::new(),
            values: Vec::new(),
            rewards: Vec::new(),
            versions: Vec::new(),
            next_features: None,
            end: None,
            frames: Vec::new(),
            step_ns: Vec::new(),
        }
    }

    /// A slot at the start of its episode `state.counter`, or rebuilt mid-episode
    /// by replaying `state.actions`.
    fn slot(&self, slot: usize, state: SlotState) -> Result<Slot, String> {
        let seed = self.seed(slot, state.counter);
        let (mut env, max_steps) = self.new_env(derive(seed, &[2]))?;
        let reset = env.reset(seed).map_err(|c| c.message)?;
        let mut obs = reset.observation;
        let mut tracker = EpisodeTracker::new(max_steps);
        for a in &state.actions {
            let r = env
                .step(&self.spec.env_action(a))
                .map_err(|c| format!("replaying an episode to resume: {c}"))?;
            tracker.record(
                tracker.flags(r.terminated, r.truncated),
                r.reward,
                None,
                &r.info,
            );
            obs = r.observation;
        }
        let _ = env.take_logs();
        let mut features = Vec::new();
        self.spec.features(&obs, &mut features);
        Ok(Slot {
            seg: self.empty_segment(slot, &state, seed, &reset.task),
            env,
            tracker,
            state,
            seed,
            task: reset.task,
            reset_info: reset.info,
            obs,
            features,
            ready_at: Instant::now(),
            round_steps: 0,
            round_done: false,
        })
    }
}

fn fresh(counter: u64) -> SlotState {
    SlotState {
        counter,
        actions: Vec::new(),
    }
}

fn run(setup: SamplerSetup) -> Result<(), String> {
    let SamplerSetup {
        index,
        plugin,
        config,
        spec,
        state,
        shared,
        tx,
    } = setup;
    let ctx = Ctx {
        index,
        plugin,
        config: config.clone(),
        spec: spec.clone(),
    };
    let n = config.sampling.envs_per_sampler;
    let (mut rng, states) = match state {
        Some(s) => (s.rng, s.slots),
        None => (
            Rng::new(derive(config.seed, &[3, index as u64])),
            (0..n).map(|_| fresh(0)).collect(),
        ),
    };
    let mut slots = Vec::with_capacity(n);
    for (i, s) in states.into_iter().enumerate() {
        slots.push(ctx.slot(i, s)?);
    }
    let weights = shared.latest();
    let mut version = weights.version;
    let mut policy = Policy::from_values(spec.clone(), &weights.values, Device::Cpu);
    let sync = config.sampling.mode == Mode::Sync;
    let whole = config.whole_episodes();
    let rollout = config.sampling.rollout_steps;
    let record = config.sampling.record;
    let delay = config.env.step_delay_ms;
    let mut feats = Vec::new();
    let mut ready = Vec::new();
    while !shared.stopped() {
        if !sync {
            shared.throttle();
            if shared.version.load(Ordering::Acquire) > version {
                let w = shared.latest();
                policy.load_values(&w.values);
                version = w.version;
            }
        }
        let now = Instant::now();
        ready.clear();
        let stepping = || (0..n).filter(|&i| !slots[i].round_done);
        // Sync: lockstep, once the slowest env of the round is ready.
        let wait_for = if sync {
            stepping().map(|i| slots[i].ready_at).max()
        } else {
            stepping().map(|i| slots[i].ready_at).min()
        };
        if sync {
            if wait_for.is_some_and(|t| t <= now) {
                ready.extend(stepping());
            }
        } else {
            ready.extend(stepping().filter(|&i| slots[i].ready_at <= now));
        }
        if ready.is_empty() {
            if slots.iter().all(|s| s.round_done) {
                let state = SamplerState {
                    rng,
                    slots: slots.iter().map(|s| s.state.clone()).collect(),
                };
                if tx
                    .send(SamplerMsg::RoundEnd {
                        sampler: index,
                        state,
                    })
                    .is_err()
                {
                    return Ok(());
                }
                let Some(w) = shared.wait_newer(version) else {
                    return Ok(());
                };
                policy.load_values(&w.values);
                version = w.version;
                for s in &mut slots {
                    s.round_done = false;
                    s.round_steps = 0;
                    s.ready_at = Instant::now();
                }
                continue;
            }
            // Envs are busy with their (simulated) step latency: wait for
            // the first (async) or the last (sync).
            let next = wait_for.unwrap_or(now);
            std::thread::sleep(next.saturating_duration_since(now));
            continue;
        }
        feats.clear();
        let frame_cap = (ctx.plugin.limits.frames, ctx.plugin.name.clone());
        for &i in &ready {
            feats.extend_from_slice(&slots[i].features);
        }
        let sampled = policy.act(&feats, ready.len(), &mut rng);
        for (k, &i) in ready.iter().enumerate() {
            let s = &sampled[k];
            let slot = &mut slots[i];
            let action = spec.env_action(&s.action);
            let t0 = Instant::now();
            // The host's frame limit, as `ludus run` has it: an env that
            // never ends an episode must not record it forever.
            let cap = frame_cap.0;
            let result = if slot.state.actions.len() as u64 >= cap {
                Err(ludus_arena::plugin::Crash {
                    message: format!(
                        "env plugin {} crashed in `step`: over the frame limit: {cap} frames without ending the episode (give the env a `max-steps`)",
                        frame_cap.1
                    ),
                })
            } else {
                slot.env.step(&action)
            };
            let step_ns = t0.elapsed().as_nanos() as u64;
            let delay_ns = match delay {
                Some([lo, hi]) => ((lo + (hi - lo) * rng.uniform()) * 1e6) as u64,
                None => 0,
            };
            slot.ready_at = Instant::now() + Duration::from_nanos(delay_ns);
            shared
                .env_busy_ns
                .fetch_add(step_ns + delay_ns, Ordering::Relaxed);
            shared.env_steps.fetch_add(1, Ordering::Relaxed);
            let seg = &mut slot.seg;
            seg.features.extend_from_slice(&slot.features);
            seg.actions.extend_from_slice(&s.action);
            seg.log_probs.push(s.log_prob);
            seg.values.push(s.value);
            seg.versions.push(version);
            slot.state.actions.push(s.action.clone());
            slot.round_steps += 1;
            let step = slot.state.actions.len() as u64 - 1;
            let (end, next_obs) = match result {
                Ok(r) => {
                    let flags = slot.tracker.flags(r.terminated, r.truncated);
                    slot.tracker.record(flags, r.reward, None, &r.info);
                    seg.rewards.push(r.reward);
                    if record {
                        seg.frames.push(Frame {
                            step: flags.step,
                            observation: std::mem::take(&mut slot.obs),
                            action: action.clone(),
                            env_reward: r.reward,
                            reward: r.reward,
                            terminated: flags.terminated,
                            truncated: flags.truncated,
                            info: r.info.clone(),
                            // Without a reward plugin no frame carries a
                            // verdict; the episode's comes from its last info.
                            success: None,
                            note: None,
                            logs: slot.env.take_logs(),
                            memory_writes: Vec::new(),
                            model_calls: Vec::new(),
                        });
                        seg.step_ns.push(step_ns);
                    }
                    let end = slot.tracker.outcome().map(|outcome| EpisodeFinish {
                        outcome,
                        return_: slot.tracker.return_(),
                        length: u64::from(slot.tracker.step()),
                        success: slot.tracker.success(),
                        error: None,
                        task: slot.task.clone(),
                        reset_info: slot.reset_info.clone(),
                        final_observation: Some(r.observation.clone()),
                        end_writes: Vec::new(),
                    });
                    (end, Some((r.observation, flags.terminated)))
                }
                Err(crash) => {
                    seg.rewards.push(0.0);
                    slot.tracker.end(Outcome::Crashed);
                    let end = EpisodeFinish {
                        outcome: Outcome::Crashed,
                        return_: slot.tracker.return_(),
                        length: step + 1,
                        success: false,
                        error: Some(crash.message),
                        task: slot.task.clone(),
                        reset_info: slot.reset_info.clone(),
                        final_observation: None,
                        end_writes: Vec::new(),
                    };
                    (Some(end), None)
                }
            };
            match next_obs {
                Some((obs, terminated)) => {
                    slot.obs = obs;
                    slot.features.clear();
                    spec.features(&slot.obs, &mut slot.features);
                    if !terminated {
                        seg.next_features = Some(slot.features.clone());
                    } else {
                        seg.next_features = None;
                    }
                }
                None => seg.next_features = None,
            }
            let cut = !whole && slot.round_steps >= rollout;
            if let Some(end) = end {
                seg.end = Some(end);
                let done = std::mem::replace(
                    seg,
                    ctx.empty_segment(i, &slot.state, slot.seed, &slot.task),
                );
                // Counted before it can be taken.
                shared.sent(done.len());
                if tx.send(SamplerMsg::Segment(Box::new(done))).is_err() {
                    return Ok(());
                }
                let counter = slot.state.counter + 1;
                let replacement = ctx.slot(i, fresh(counter))?;
                let (round_steps, ready_at) = (slot.round_steps, slot.ready_at);
                *slot = replacement;
                slot.round_steps = round_steps;
                slot.ready_at = ready_at;
                if sync && whole {
                    slot.round_done = true;
                }
            } else if cut {
                let done = std::mem::replace(
                    seg,
                    ctx.empty_segment(i, &slot.state, slot.seed, &slot.task),
                );
                // Counted before it can be taken.
                shared.sent(done.len());
                if tx.send(SamplerMsg::Segment(Box::new(done))).is_err() {
                    return Ok(());
                }
            }
            if cut {
                slot.round_steps = 0;
                if sync {
                    slot.round_done = true;
                }
            }
        }
    }
    Ok(())
}
