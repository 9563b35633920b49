//! Playing episodes again with the real plugins: fork a recorded episode at a
//! frame after editing its memory or action, re-run it with a new build of
//! one plugin, check that a replay reproduces the recording, and play a live
//! episode step by step.
//!
//! A fork replays the recorded prefix deterministically (same plugins, seed
//! and starting memory), checks every replayed frame against the recording
//! and stops with the first frame that differs, applies the edits, and plays
//! the episode to its end. The result is recorded as a new episode whose
//! parent is the original: branches form a tree.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use ludus_arena::memory::{MemoryBase, apply_writes, scope_of};
use ludus_arena::model::{Action, Frame, Timing};
use ludus_arena::replay::{
    self, AgentResolver, BranchOf, BranchRecorder, ChangedPlugin, Overrides,
};
use ludus_arena::run::Prepared;
use ludus_arena::{EpisodeReport, Stepper};
use serde::{Deserialize, Serialize};

use crate::DebugError;
use crate::diff::{Change, EpisodeDiff, diff_episodes, diff_frames};
use crate::source::{Block, FrameSource, Frames, Recording};
use crate::view::EpisodeMeta;

/// What to change at the fork frame, before the agent acts there.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Edits {
    /// Paths to set, in order (any scope, `/user` included).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub set: Vec<(String, String)>,
    /// Paths to delete.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub delete: Vec<String>,
    /// The action the env gets at the fork frame instead of the agent's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<Action>,
    /// Answers for the fork frame's model calls, by the call's index in
    /// the frame, instead of the model's: "what if the model had said this".
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub model_responses: Vec<(usize, String)>,
}

impl Edits {
    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
            && self.delete.is_empty()
            && self.action.is_none()
            && self.model_responses.is_empty()
    }

    /// Checks every path before anything is played or written.
    pub fn validate(&self) -> Result<(), DebugError> {
        for path in self.set.iter().map(|(p, _)| p).chain(&self.delete) {
            scope_of(path).map_err(|e| DebugError::Invalid(format!("cannot edit memory: {e}")))?;
        }
        Ok(())
    }

    fn apply(&self, stepper: &mut Stepper) -> Result<(), DebugError> {
        for (path, value) in &self.set {
            stepper
                .edit_memory(path, Some(value))
                .map_err(|e| DebugError::Invalid(format!("cannot set {path}: {e}")))?;
        }
        for path in &self.delete {
            stepper
                .edit_memory(path, None)
                .map_err(|e| DebugError::Invalid(format!("cannot delete {path}: {e}")))?;
        }
        stepper.edit_model_responses(self.model_responses.iter().cloned().collect());
        Ok(())
    }
}

/// Edits made at one frame.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FrameEdits {
    pub frame: u64,
    #[serde(flatten)]
    pub edits: Edits,
}

/// Everything a branch's frames depend on beyond its seed and plugins: the
/// edits made at each frame (its own and those inherited from its ancestors)
/// and the plugins a re-run replaced. Stored as the episode's `edits` JSON,
/// so a branch replays exactly, and so can a branch of a branch.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub edits: Vec<FrameEdits>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub replaced: BTreeMap<String, String>,
}

impl History {
    /// The history recorded for an episode (empty for a plain recording).
    pub fn of(row: &ludus_arena::store::EpisodeRow) -> History {
        row.edits
            .as_deref()
            .and_then(|s| serde_json::from_str(s).ok())
            .unwrap_or_default()
    }

    /// The edits made at `frame`, in order.
    fn at(&self, frame: u64) -> impl Iterator<Item = &Edits> {
        self.edits
            .iter()
            .filter(move |e| e.frame == frame)
            .map(|e| &e.edits)
    }

    fn json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Plays one frame, applying the history's edits for it first.
fn step_with(
    stepper: &mut Stepper,
    history: &History,
    frame: u64,
) -> Result<Option<(Frame, Timing)>, DebugError> {
    let mut action = None;
    for e in history.at(frame) {
        e.apply(stepper)?;
        if e.action.is_some() {
            action = e.action.clone();
        }
    }
    Ok(stepper.step(action))
}

/// A replay that did not reproduce the recording.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Mismatch {
    pub frame: u64,
    pub changes: Vec<Change>,
    /// Set when a plugin crashed during the replay where the recording went on.
    pub crash: Option<String>,
    pub changed_plugins: Vec<ChangedPlugin>,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the replay does not reproduce the recording at frame {}",
            self.frame
        )?;
        if let Some(c) = &self.crash {
            write!(f, ": {c}")?;
        }
        let what: Vec<String> = self.changes.iter().take(3).map(Change::summary).collect();
        if !what.is_empty() {
            write!(f, ": {}", what.join("; "))?;
        }
        if self.changed_plugins.is_empty() {
            write!(
                f,
                " (the plugins are unchanged: is one of them not deterministic?)"
            )
        } else {
            let changed: Vec<String> = self.changed_plugins.iter().map(|c| c.to_string()).collect();
            write!(f, "; {}", changed.join("; "))
        }
    }
}

/// Replays frames `0..upto` of the recording and checks each one.
fn replay_prefix(
    stepper: &mut Stepper,
    recording: &Recording,
    upto: u64,
    changed: &[ChangedPlugin],
    keep: &mut Vec<(Frame, Timing)>,
) -> Result<(), Mismatch> {
    let history = History::of(&recording.episode);
    let mut block: Option<Block> = None;
    for k in 0..upto {
        let recorded = match &block {
            Some((first, frames)) if k >= *first && k < first + frames.len() as u64 => {
                frames[(k - first) as usize].0.clone()
            }
            _ => {
                let b = recording.block(k).map_err(|e| Mismatch {
                    frame: k,
                    changes: Vec::new(),
                    crash: Some(format!("cannot read the recorded frame: {e}")),
                    changed_plugins: changed.to_vec(),
                })?;
                let f = b.1[(k - b.0) as usize].0.clone();
                block = Some(b);
                f
            }
        };
        // The frame's model calls are served from the recording: a
        // replayed prefix contacts no model endpoint.
        stepper.replay_model_calls(recorded.model_calls.clone());
        let played = step_with(stepper, &history, k).map_err(|e| Mismatch {
            frame: k,
            changes: Vec::new(),
            crash: Some(format!("cannot apply the recorded edits: {e}")),
            changed_plugins: changed.to_vec(),
        })?;
        let Some((frame, timing)) = played else {
            return Err(Mismatch {
                frame: k,
                changes: Vec::new(),
                crash: Some(
                    "the replayed episode ended or crashed here (the recording goes on)".into(),
                ),
                changed_plugins: changed.to_vec(),
            });
        };
        let model = stepper.model_mismatch();
        if !ludus_arena::codec::same_frame(&frame, &recorded) || model.is_some() {
            return Err(Mismatch {
                frame: k,
                changes: diff_frames(&recorded, &frame),
                crash: model.map(|(call, what)| format!("model call {call}: {what}")),
                changed_plugins: changed.to_vec(),
            });
        }
        keep.push((frame, timing));
    }
    Ok(())
}

/// Starts the recorded episode again; with `replay`, the model calls the
/// plugins make while starting are served from frame 0's recording.
fn start(recorded: &replay::Recorded, replay: Option<&Recording>) -> Result<Stepper, DebugError> {
    let first_calls = replay
        .and_then(|r| r.block(0).ok())
        .and_then(|(_, frames)| frames.first().map(|(f, _)| f.model_calls.clone()))
        .unwrap_or_default();
    Stepper::start_replaying(
        &recorded.prepared,
        recorded.episode.seed,
        recorded.base.clone(),
        first_calls,
    )
    .map_err(|f| {
        DebugError::Invalid(format!(
            "the episode crashed while starting: {}",
            f.error.unwrap_or_default()
        ))
    })
}

/// Plays the stepper to its end from frame `from`, applying the history's
/// edits at their frames and recording every frame.
fn play_out(
    mut stepper: Stepper,
    mut recorder: BranchRecorder,
    history: &History,
    from: u64,
) -> Result<EpisodeReport, DebugError> {
    let mut k = from;
    while !stepper.is_done() {
        let Some((frame, timing)) = step_with(&mut stepper, history, k)? else {
            break;
        };
        recorder.push(&frame, timing);
        k += 1;
    }
    Ok(recorder.end(stepper.finish())?)
}

/// The result of a fork or a re-run.
#[derive(Clone, Debug, Serialize)]
pub struct BranchReport {
    /// The new episode.
    pub branch: EpisodeReport,
    pub run_id: String,
    pub parent: i64,
    pub frame: u64,
    pub edits: Edits,
    pub changed_plugins: Vec<ChangedPlugin>,
    /// The parent against the branch.
    pub diff: EpisodeDiff,
}

/// Replays `episode` to `frame`, applies `edits`, plays on to the end and
/// records the branch. Nothing is written when the replay does not
/// reproduce the recording. `agents` rebuilds a native agent (a trained
/// policy) when the episode was played by one.
pub fn fork(
    db: &Path,
    episode: i64,
    frame: u64,
    edits: &Edits,
    agents: Option<&AgentResolver>,
) -> Result<BranchReport, DebugError> {
    fork_with_models(db, episode, frame, edits, agents, Default::default())
}

/// [`fork`], with model endpoints for the calls after the fork frame (the
/// prefix's calls are served from the recording).
pub fn fork_with_models(
    db: &Path,
    episode: i64,
    frame: u64,
    edits: &Edits,
    agents: Option<&AgentResolver>,
    models: ludus_arena::chat::ModelSetup,
) -> Result<BranchReport, DebugError> {
    edits.validate()?;
    let overrides = Overrides {
        models,
        ..Overrides::default()
    };
    let recorded = replay::load(db, episode, &overrides, agents)?;
    let parent = Recording::open(db, episode)?;
    let ended_normally = matches!(parent.episode.outcome.as_str(), "terminated" | "truncated");
    if frame > parent.len() || (frame == parent.len() && ended_normally) {
        return Err(DebugError::Invalid(format!(
            "cannot fork episode {episode} at frame {frame}: it has {} frames (fork at 0..{})",
            parent.len(),
            parent.len().saturating_sub(1)
        )));
    }
    // Forking at frame 0 replays nothing: its calls are new.
    let mut stepper = start(&recorded, (frame > 0).then_some(&parent))?;
    let mut prefix = Vec::with_capacity(frame as usize);
    replay_prefix(&mut stepper, &parent, frame, &recorded.changed, &mut prefix)
        .map_err(|m| DebugError::Replay(Box::new(m)))?;
    // The branch keeps its ancestors' edits before the fork frame, and adds
    // its own at it.
    let mut history = History::of(&parent.episode);
    history.edits.retain(|e| e.frame < frame);
    history.edits.push(FrameEdits {
        frame,
        edits: edits.clone(),
    });
    let branch_of = BranchOf {
        parent_episode: episode,
        parent_frame: frame,
        edits: history.json(),
    };
    let mut recorder = BranchRecorder::start(
        db,
        &recorded.prepared,
        recorded.episode.seed,
        &recorded.base,
        Some(branch_of),
    )?;
    for (f, t) in &prefix {
        recorder.push(f, *t);
    }
    let run_id = recorder.run_id.clone();
    let report = play_out(stepper, recorder, &history, frame)?;
    let branch = Recording::open(db, report.id)?;
    let diff = diff_episodes(&parent, &branch)?;
    Ok(BranchReport {
        branch: report,
        run_id,
        parent: episode,
        frame,
        edits: edits.clone(),
        changed_plugins: recorded.changed,
        diff,
    })
}

/// Plays `episode` again from its start (same seed, same starting memory)
/// with new builds of some plugins (or another native agent, e.g. a
/// retrained checkpoint), records it as a branch, and compares it with the
/// recording: "what did my change change".
pub fn rerun(
    db: &Path,
    episode: i64,
    overrides: &Overrides,
    agents: Option<&AgentResolver>,
) -> Result<BranchReport, DebugError> {
    let recorded = replay::load(db, episode, overrides, agents)?;
    let parent = Recording::open(db, episode)?;
    let stepper = start(&recorded, None)?;
    let mut replaced: BTreeMap<String, String> = [
        ("env", &overrides.env),
        ("agent", &overrides.agent),
        ("reward", &overrides.reward),
    ]
    .into_iter()
    .filter_map(|(k, p)| Some((k.to_string(), p.as_ref()?.display().to_string())))
    .collect();
    if let Some(source) = &overrides.native_agent {
        replaced.insert("agent".into(), source.clone());
    }
    // The parent's own edits are made again, at the same frames.
    let mut history = History::of(&parent.episode);
    history.replaced.extend(replaced);
    let branch_of = BranchOf {
        parent_episode: episode,
        parent_frame: 0,
        edits: history.json(),
    };
    let recorder = BranchRecorder::start(
        db,
        &recorded.prepared,
        recorded.episode.seed,
        &recorded.base,
        Some(branch_of),
    )?;
    let run_id = recorder.run_id.clone();
    let report = play_out(stepper, recorder, &history, 0)?;
    let branch = Recording::open(db, report.id)?;
    let diff = diff_episodes(&parent, &branch)?;
    Ok(BranchReport {
        branch: report,
        run_id,
        parent: episode,
        frame: 0,
        edits: Edits::default(),
        changed_plugins: recorded.changed,
        diff,
    })
}

/// Replays a whole recorded episode without recording anything and says
/// whether it reproduces every frame: `Ok(None)` when it does.
pub fn verify(
    db: &Path,
    episode: i64,
    agents: Option<&AgentResolver>,
) -> Result<Option<Mismatch>, DebugError> {
    let recorded = replay::load(db, episode, &Overrides::default(), agents)?;
    let parent = Recording::open(db, episode)?;
    let mut stepper = start(&recorded, Some(&parent))?;
    let mut sink = Vec::new();
    match replay_prefix(
        &mut stepper,
        &parent,
        parent.len(),
        &recorded.changed,
        &mut sink,
    ) {
        Ok(()) => Ok(None),
        Err(m) => Ok(Some(m)),
    }
}

/// An episode played a frame at a time under the debugger (live mode): it
/// pauses wherever the caller likes, takes memory edits and action
/// replacements between frames, and is recorded as it goes when given a
/// database. It is a [`FrameSource`], so a session can show it.
pub struct LiveEpisode {
    stepper: Option<Stepper>,
    recorder: Option<BranchRecorder>,
    /// The frames played so far, the starting memory and the episode's facts.
    played: Frames,
    /// Memory after the last frame.
    now: BTreeMap<String, String>,
    report: Option<EpisodeReport>,
    /// The user's edits, by frame, so the recorded episode replays exactly.
    history: History,
    db: Option<std::path::PathBuf>,
}

impl LiveEpisode {
    /// Starts an episode of a prepared run with the given seed, recording
    /// it into `db` when given.
    pub fn start(
        prepared: &Prepared,
        seed: u64,
        base: MemoryBase,
        db: Option<&Path>,
    ) -> Result<LiveEpisode, DebugError> {
        let stepper = Stepper::start(prepared, seed, base.clone()).map_err(|f| {
            DebugError::Invalid(format!(
                "the episode crashed while starting: {}",
                f.error.unwrap_or_default()
            ))
        })?;
        let recorder = match db {
            Some(db) => Some(BranchRecorder::start(db, prepared, seed, &base, None)?),
            None => None,
        };
        let start = crate::source::merged(&base);
        Ok(LiveEpisode {
            stepper: Some(stepper),
            played: Frames {
                frames: Vec::new(),
                meta: EpisodeMeta {
                    id: recorder.as_ref().map_or(0, |r| r.episode_id),
                    outcome: "running".into(),
                    seed,
                    ..EpisodeMeta::default()
                },
                start: start.clone(),
            },
            recorder,
            now: start,
            report: None,
            history: History::default(),
            db: db.map(Path::to_path_buf),
        })
    }

    /// Whether the episode has ended.
    pub fn is_done(&self) -> bool {
        self.stepper.as_ref().is_none_or(Stepper::is_done)
    }

    /// The memory the agent will see when it acts next.
    pub fn memory(&self) -> BTreeMap<String, String> {
        self.stepper
            .as_ref()
            .map_or_else(|| self.now.clone(), Stepper::memory)
    }

    /// Sets or deletes a path before the next frame (recorded with it).
    pub fn edit_memory(&mut self, path: &str, value: Option<&str>) -> Result<(), DebugError> {
        let Some(s) = self.stepper.as_mut() else {
            return Err(DebugError::Invalid("the episode has ended".into()));
        };
        s.edit_memory(path, value)
            .map_err(|e| DebugError::Invalid(format!("cannot edit {path}: {e}")))?;
        let edits = self.edits_here();
        match value {
            Some(v) => edits.set.push((path.to_string(), v.to_string())),
            None => edits.delete.push(path.to_string()),
        }
        Ok(())
    }

    /// The history entry for the next frame.
    fn edits_here(&mut self) -> &mut Edits {
        let frame = self.played.len();
        if self.history.edits.last().is_none_or(|e| e.frame != frame) {
            self.history.edits.push(FrameEdits {
                frame,
                edits: Edits::default(),
            });
        }
        let last = self.history.edits.len() - 1;
        &mut self.history.edits[last].edits
    }

    /// Plays one frame (with the env getting `replace` instead of the
    /// agent's action when given). Returns the new frame's index, or `None`
    /// when the episode has ended.
    pub fn step(&mut self, replace: Option<Action>) -> Result<Option<u64>, DebugError> {
        if self.stepper.is_none() {
            return Ok(None);
        }
        if let Some(a) = &replace {
            self.edits_here().action = Some(a.clone());
        }
        let Some(s) = self.stepper.as_mut() else {
            return Ok(None);
        };
        let mut played = None;
        if let Some((frame, timing)) = s.step(replace) {
            apply_writes(
                &mut self.now,
                frame
                    .memory_writes
                    .iter()
                    .map(|w| (w.path.as_str(), w.value.as_deref())),
            );
            if let Some(r) = self.recorder.as_mut() {
                r.push(&frame, timing);
            }
            self.played.meta.return_ += f64::from(frame.reward);
            self.played.frames.push((frame, timing));
            self.played.meta.length = self.played.len();
            played = Some(self.played.meta.length - 1);
        }
        if self.is_done() {
            self.end()?;
        }
        Ok(played)
    }

    /// Ends the episode (as `interrupted` when it had not ended) and records
    /// its ending. Idempotent.
    pub fn end(&mut self) -> Result<Option<&EpisodeReport>, DebugError> {
        if let Some(mut s) = self.stepper.take() {
            s.interrupt();
            let finish = s.finish();
            self.played.meta.outcome = finish.outcome.as_str().to_string();
            self.played.meta.success = finish.success;
            if let Some(r) = self.recorder.take() {
                let report = r.end(finish)?;
                if let (Some(db), false) = (&self.db, self.history.edits.is_empty()) {
                    ludus_arena::Db::open(db)?
                        .set_episode_edits(report.id, &self.history.json())?;
                }
                self.report = Some(report);
            }
        }
        Ok(self.report.as_ref())
    }

    /// The recorded episode, once ended.
    pub fn report(&self) -> Option<&EpisodeReport> {
        self.report.as_ref()
    }
}

impl FrameSource for LiveEpisode {
    fn len(&self) -> u64 {
        self.played.len()
    }

    fn block(&self, k: u64) -> Result<Block, DebugError> {
        self.played.block(k)
    }

    fn start_memory(&self) -> BTreeMap<String, String> {
        self.played.start_memory()
    }

    fn memory_after(&self, k: u64) -> Result<BTreeMap<String, String>, DebugError> {
        // The common case in live mode: the frame just played.
        if k + 1 == self.len() {
            return Ok(self.now.clone());
        }
        self.played.memory_after(k)
    }

    fn written_paths(&self) -> Result<std::sync::Arc<Vec<String>>, DebugError> {
        self.played.written_paths()
    }

    fn meta(&self) -> EpisodeMeta {
        self.played.meta()
    }
}
