//! An env plugin stepped from outside the arena (a Python program through
//! the `ludus` package, a network client through `ludus serve`): the caller
//! chooses the actions, ludus runs the env as `ludus run` runs it (a fresh,
//! sandboxed instance per episode, seeded the same way, the same step
//! limits) and, with a [`Recording`], records every episode as `ludus run`
//! records it, so `ludus debug` and the IDE open it.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ludus_core::derived_seed;

use crate::episode::EpisodeTracker;
use crate::model::{Action, EnvInfo, Frame, LogLine, Observation, Timing};
use crate::plugin::{Crash, EnvInstance, Plugin, VectorStep};
use crate::recorder::{EpisodeFinish, FrameWriter, Recorder};
use crate::{Outcome, StoreError};

/// A run that episodes played from outside are recorded into: one run,
/// any number of [`DrivenEnv`]s (one per thread or session), each episode
/// numbered in the order it started.
pub struct Recording {
    recorder: Recorder,
    next: AtomicU64,
    run_id: String,
}

impl Recording {
    /// Creates the run `run_id` in `db` (a file that may already hold other
    /// runs); `spec` says what played it (`kind`, `env`).
    pub fn start(
        db: &Path,
        run_id: &str,
        spec: &serde_json::Value,
    ) -> Result<Arc<Recording>, StoreError> {
        let recorder = Recorder::start_training(db, run_id, 0, spec, None)?;
        Ok(Arc::new(Recording {
            recorder,
            next: AtomicU64::new(0),
            run_id: run_id.to_string(),
        }))
    }

    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// Commits everything and marks the run finished (episodes still in
    /// progress are recorded as interrupted). Every [`DrivenEnv`] recording
    /// into it must have been dropped or ended: otherwise nothing is done
    /// and `Ok(false)` is returned.
    pub fn finish(self: Arc<Self>) -> Result<bool, StoreError> {
        match Arc::try_unwrap(self) {
            Ok(r) => r.recorder.finish_training("finished").map(|()| true),
            Err(_) => Ok(false),
        }
    }
}

/// Why a step was not taken.
#[derive(Debug, thiserror::Error)]
pub enum DrivenError {
    #[error("call reset() before step()")]
    NoEpisode,
    #[error("the episode has ended: call reset()")]
    Ended,
    /// The plugin crashed; the episode is recorded as crashed and over.
    #[error("{}", .0.message)]
    Crash(Crash),
}

/// What `reset` gives back.
pub struct Reset {
    pub observation: Observation,
    pub task: String,
    pub info: String,
}

/// What `step` gives back.
pub struct Step {
    pub observation: Observation,
    pub reward: f32,
    pub terminated: bool,
    pub truncated: bool,
    pub info: String,
}

struct Episode {
    env: EnvInstance,
    tracker: EpisodeTracker,
    /// The observation the next action answers (for the frame).
    observation: Option<Observation>,
    index: u64,
    task: String,
    reset_info: String,
    /// Logs since the last frame (the first frame gets those of `reset`).
    logs: Vec<LogLine>,
}

/// One env plugin driven from outside, one episode at a time.
pub struct DrivenEnv {
    plugin: Arc<Plugin>,
    config: String,
    info: EnvInfo,
    episode: Option<Episode>,
    recording: Option<(Arc<Recording>, FrameWriter)>,
}

impl DrivenEnv {
    /// `info` is what the plugin's `init` gave for `config`.
    pub fn new(
        plugin: Arc<Plugin>,
        config: &str,
        info: EnvInfo,
        recording: Option<Arc<Recording>>,
    ) -> DrivenEnv {
        DrivenEnv {
            plugin,
            config: config.to_string(),
            info,
            episode: None,
            recording: recording.map(|r| {
                let writer = r.recorder.writer();
                (r, writer)
            }),
        }
    }

    pub fn info(&self) -> &EnvInfo {
        &self.info
    }

    pub fn recording(&self) -> bool {
        self.recording.is_some()
    }

    /// Whether an episode is in progress (reset and not ended).
    pub fn in_episode(&self) -> bool {
        self.episode
            .as_ref()
            .is_some_and(|e| e.tracker.outcome().is_none())
    }

    /// The length of the flat observation where episodes may be played by
    /// the contract's fast path ([`Self::reset_vector`]): one vector of at
    /// most 8 values, a plugin that offers the fast path, nothing recorded;
    /// else 0.
    pub fn vector_size(&self) -> Result<usize, Crash> {
        let size = self.info.vector_size as usize;
        if size == 0 || size > 8 || self.recording.is_some() {
            return Ok(0);
        }
        Ok(if self.plugin.env(0)?.has_vector_step() {
            size
        } else {
            0
        })
    }

    fn fresh(&self, seed: u64) -> Result<EnvInstance, Crash> {
        let mut env = self.plugin.env(derived_seed(seed, 0))?;
        let _ = env.init(&self.config)?;
        Ok(env)
    }

    /// A new episode from `seed` (one in progress is recorded as
    /// interrupted).
    pub fn reset(&mut self, seed: u64) -> Result<Reset, Crash> {
        if self.in_episode() {
            self.end(None);
        }
        self.episode = None;
        let mut env = self.fresh(seed)?;
        let reset = env.reset(seed)?;
        let logs = env.take_logs();
        let index = match self.recording.as_mut() {
            Some((r, w)) => {
                let index = r.next.fetch_add(1, Ordering::Relaxed);
                w.start(index, seed);
                index
            }
            None => 0,
        };
        self.episode = Some(Episode {
            env,
            tracker: EpisodeTracker::new(self.info.max_steps),
            observation: Some(reset.observation.clone()),
            index,
            task: reset.task.clone(),
            reset_info: reset.info.clone(),
            logs,
        });
        Ok(Reset {
            observation: reset.observation,
            task: reset.task,
            info: reset.info,
        })
    }

    /// One step with `action`.
    pub fn step(&mut self, action: Action) -> Result<Step, DrivenError> {
        let e = self.episode.as_mut().ok_or(DrivenError::NoEpisode)?;
        if e.tracker.outcome().is_some() {
            return Err(DrivenError::Ended);
        }
        let started = std::time::Instant::now();
        let result = e.env.step(&action);
        let step_ns = started.elapsed().as_nanos() as u64;
        let r = match result {
            Ok(r) => r,
            Err(c) => {
                self.end(Some(c.message.clone()));
                self.episode = None;
                return Err(DrivenError::Crash(c));
            }
        };
        let step = e.tracker.step();
        let flags = e.tracker.flags(r.terminated, r.truncated);
        e.logs.extend(e.env.take_logs());
        e.tracker.record(flags, r.reward, None, &r.info);
        let previous = e.observation.replace(r.observation.clone());
        let logs = std::mem::take(&mut e.logs);
        if let Some((_, w)) = self.recording.as_mut() {
            let frame = Frame {
                step,
                observation: previous.unwrap_or_default(),
                action,
                env_reward: r.reward,
                reward: r.reward,
                terminated: flags.terminated,
                truncated: flags.truncated,
                info: r.info.clone(),
                success: None,
                note: None,
                logs,
                memory_writes: Vec::new(),
                model_calls: Vec::new(),
            };
            let timing = Timing {
                act_ns: 0,
                step_ns,
                score_ns: 0,
            };
            w.push(e.index, &frame, timing);
        }
        if flags.ended() {
            self.end(None);
        }
        Ok(Step {
            observation: r.observation,
            reward: r.reward,
            terminated: flags.terminated,
            truncated: flags.truncated,
            info: r.info,
        })
    }

    /// A new episode from `seed` by the fast path: the flat observation
    /// (its `vector_size` values), or `None` where the plugin declines (use
    /// [`Self::reset`]). Not while recording ([`Self::vector_size`] is 0).
    pub fn reset_vector(&mut self, seed: u64) -> Result<Option<Vec<f32>>, Crash> {
        if self.recording.is_some() {
            return Ok(None);
        }
        self.episode = None;
        let mut env = self.fresh(seed)?;
        let Some(first) = env.reset_vector(seed)? else {
            return Ok(None);
        };
        self.episode = Some(Episode {
            env,
            tracker: EpisodeTracker::new(self.info.max_steps),
            observation: None,
            index: 0,
            task: String::new(),
            reset_info: String::new(),
            logs: Vec::new(),
        });
        let size = (self.info.vector_size as usize).min(first.len());
        Ok(Some(first[..size].to_vec()))
    }

    /// One step by the fast path (`action`: a discrete action's index, or
    /// the continuous values), the step limit applied; `None` where the
    /// plugin declines.
    pub fn step_vector(&mut self, action: &[f32]) -> Result<Option<VectorStep>, DrivenError> {
        let e = self.episode.as_mut().ok_or(DrivenError::NoEpisode)?;
        if e.tracker.outcome().is_some() {
            return Err(DrivenError::Ended);
        }
        let mut stepped = match e.env.step_vector(action) {
            Ok(Some(v)) => v,
            Ok(None) => return Ok(None),
            Err(c) => {
                self.episode = None;
                return Err(DrivenError::Crash(c));
            }
        };
        let flags = e.tracker.flags(stepped.terminated, stepped.truncated);
        e.tracker.record(flags, stepped.reward, None, "");
        stepped.terminated = flags.terminated;
        stepped.truncated = flags.truncated;
        Ok(Some(stepped))
    }

    /// Records the end of the episode: crashed with `error`, else as it
    /// ended, else interrupted. Called once per episode: when it ends or
    /// crashes, or (while it is in progress) on reset and close.
    fn end(&mut self, error: Option<String>) {
        let (Some(e), Some((_, w))) = (self.episode.as_mut(), self.recording.as_mut()) else {
            return;
        };
        if error.is_some() {
            e.tracker.end(Outcome::Crashed);
        } else if e.tracker.outcome().is_none() {
            e.tracker.end(Outcome::Interrupted);
        }
        let outcome = e.tracker.outcome().unwrap_or(Outcome::Interrupted);
        let finish = EpisodeFinish {
            outcome,
            return_: e.tracker.return_(),
            length: u64::from(e.tracker.step()),
            success: matches!(outcome, Outcome::Terminated | Outcome::Truncated)
                && e.tracker.success(),
            error,
            task: e.task.clone(),
            reset_info: e.reset_info.clone(),
            final_observation: e.observation.clone(),
            end_writes: Vec::new(),
        };
        w.end(e.index, finish);
    }

    /// Ends the episode in progress (recorded as interrupted) and stops
    /// recording: what it recorded is committed when the [`Recording`]
    /// finishes.
    pub fn close(&mut self) {
        if self.in_episode() {
            self.end(None);
        }
        self.episode = None;
        self.recording = None;
    }
}

impl Drop for DrivenEnv {
    fn drop(&mut self) {
        self.close();
    }
}
