//! Playing recorded episodes again: rebuilding a run from what the database
//! says about it (the same plugins, configs, limits and seed, optionally with
//! one plugin swapped for a new build), and recording the result as a branch
//! of the episode it came from. The debugger's fork, re-run and live mode sit
//! on this.
//!
//! A run played by a native agent (a trained policy: `checkpoint:PATH`)
//! records the agent's source, config and hash, but this crate cannot build
//! such an agent (it does not link tch): the caller passes an
//! [`AgentResolver`] that can, and without one such a run cannot be replayed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::memory::MemoryBase;
use crate::model::{Frame, Timing};
use crate::plugin::{Limits, PluginKind};
pub use crate::recorder::BranchOf;
use crate::recorder::{EpisodeFinish, FrameWriter, Recorder, RunRecord};
use crate::run::{
    AgentSpec, EpisodeReport, NativeAgentFactory, PluginSpec, Prepared, RunError, RunSpec,
    new_run_id, prepare,
};
use crate::store::{Db, EpisodeRow, RunRow, StoreError};

/// Rebuilds a native agent from its recorded source and config (e.g.
/// `checkpoint:/runs/ppo/latest.safetensors`, `greedy`). The `ludus` binary
/// supplies one (`ludus_trainer::agent::resolve`); `Err` is a one-line
/// message for the user.
pub type AgentResolver = dyn Fn(&str, &str) -> Result<Arc<dyn NativeAgentFactory>, String> + Sync;

/// Plugins to use instead of the recorded ones.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub env: Option<PathBuf>,
    pub agent: Option<PathBuf>,
    pub reward: Option<PathBuf>,
    /// A native agent to use instead of the recorded agent, by source
    /// (`checkpoint:PATH`); built by the resolver with the recorded config.
    /// Wins over `agent`.
    pub native_agent: Option<String>,
    /// Model endpoints for the calls that are not served from the
    /// recording (none: such calls are answered `unknown-endpoint`).
    pub models: crate::chat::ModelSetup,
}

/// A plugin whose file no longer holds the bytes the recording was made with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangedPlugin {
    pub role: PluginKind,
    pub path: PathBuf,
    pub recorded_hash: String,
    pub current_hash: String,
}

impl std::fmt::Display for ChangedPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} plugin {} changed since the recording (blake3 {} then, {} now)",
            self.role,
            self.path.display(),
            short(&self.recorded_hash),
            short(&self.current_hash)
        )
    }
}

fn short(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}

/// A recorded episode, ready to be played again.
pub struct Recorded {
    pub run: RunRow,
    pub episode: EpisodeRow,
    pub prepared: Prepared,
    /// The memory the episode started from.
    pub base: MemoryBase,
    /// Plugins whose bytes differ from the recording's (overridden ones included).
    pub changed: Vec<ChangedPlugin>,
}

#[derive(Deserialize)]
struct RecordedPlugin {
    path: PathBuf,
    hash: String,
    #[serde(default)]
    config: String,
    limits: Option<Limits>,
    /// A native agent: `path` is its source, for the resolver.
    #[serde(default)]
    native: bool,
}

fn recorded_plugin(
    spec: &serde_json::Value,
    role: &str,
    run: &str,
) -> Result<Option<RecordedPlugin>, RunError> {
    match spec.get(role) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(v) => serde_json::from_value(v.clone()).map(Some).map_err(|e| {
            RunError::Spec(format!(
                "run {run} does not say which {role} plugin it used ({e}); it cannot be replayed"
            ))
        }),
    }
}

/// Loads the plugins a recorded episode was played with (or the overrides),
/// ready to replay it. `agents` rebuilds native agents (needed only when the
/// run was played by one, or `overrides.native_agent` is set).
pub fn load(
    db_path: &Path,
    episode: i64,
    overrides: &Overrides,
    agents: Option<&AgentResolver>,
) -> Result<Recorded, RunError> {
    let db = Db::open(db_path)?;
    let row = db.episode(episode)?;
    let run = db.run(&row.run_id)?;
    let base = db.episode_base_memory(&row)?;
    drop(db);
    let outside = match run.spec.get("kind").and_then(|k| k.as_str()) {
        Some("python") => Some("from Python (ludus.make)"),
        Some("serve") => Some("by a client of `ludus serve`"),
        _ => None,
    };
    if let Some(by) = outside {
        return Err(RunError::Spec(format!(
            "run {} was played {by}: its actions came from that program, not from an \
             agent plugin, so it cannot be forked or replayed; step through it with \
             `ludus debug` or compare it with `ludus diff`",
            run.id
        )));
    }
    let env = recorded_plugin(&run.spec, "env", &run.id)?;
    let agent = recorded_plugin(&run.spec, "agent", &run.id)?;
    let reward = recorded_plugin(&run.spec, "reward", &run.id)?;
    let (Some(env), Some(agent)) = (env, agent) else {
        return Err(RunError::Spec(format!(
            "run {} has no env or agent plugin recorded (a benchmark run?); it cannot be replayed",
            run.id
        )));
    };
    let pick = |r: &RecordedPlugin, o: &Option<PathBuf>| PluginSpec {
        path: o.clone().unwrap_or_else(|| r.path.clone()),
        config: r.config.clone(),
        limits: r.limits.unwrap_or(Limits::DEFAULT),
    };
    if overrides.reward.is_some() && reward.is_none() {
        return Err(RunError::Spec(format!(
            "run {} used no reward plugin, so there is none to replace",
            run.id
        )));
    }
    let resolve = |source: &str, config: &str| -> Result<AgentSpec, RunError> {
        let Some(resolver) = agents else {
            return Err(RunError::Spec(format!(
                "run {} needs the native agent {source}, which only the `ludus` command line can rebuild (replay it with `ludus fork` or `ludus rerun`)",
                run.id
            )));
        };
        resolver(source, config)
            .map(AgentSpec::Native)
            .map_err(RunError::Spec)
    };
    // A recorded config is given back only to an agent of the same kind.
    let agent_spec = match (&overrides.native_agent, &overrides.agent) {
        (Some(source), _) => resolve(source, if agent.native { &agent.config } else { "" })?,
        (None, Some(path)) => AgentSpec::Plugin(PluginSpec {
            path: path.clone(),
            config: if agent.native {
                String::new()
            } else {
                agent.config.clone()
            },
            limits: agent.limits.unwrap_or(Limits::DEFAULT),
        }),
        (None, None) if agent.native => resolve(&agent.path.to_string_lossy(), &agent.config)?,
        (None, None) => AgentSpec::Plugin(pick(&agent, &None)),
    };
    let spec = RunSpec {
        env: pick(&env, &overrides.env),
        agent: agent_spec,
        reward: reward.as_ref().map(|r| pick(r, &overrides.reward)),
        episodes: 1,
        seed: run.seed,
        jobs: 1,
        db: db_path.to_path_buf(),
        models: overrides.models.clone(),
        step_delay: std::time::Duration::ZERO,
    };
    let prepared = prepare(spec)?;
    let mut changed = Vec::new();
    let mut check = |role: PluginKind, recorded: &RecordedPlugin, name: String, hash: String| {
        if recorded.hash != hash {
            changed.push(ChangedPlugin {
                role,
                path: PathBuf::from(name),
                recorded_hash: recorded.hash.clone(),
                current_hash: hash,
            });
        }
    };
    let plugin = |p: &crate::Plugin| (p.path.display().to_string(), p.hash.clone());
    let (name, hash) = plugin(&prepared.env);
    check(PluginKind::Env, &env, name, hash);
    check(
        PluginKind::Agent,
        &agent,
        prepared.agent.name(),
        prepared.agent.hash(),
    );
    if let (Some(r), Some(p)) = (&reward, &prepared.reward) {
        let (name, hash) = plugin(p);
        check(PluginKind::Reward, r, name, hash);
    }
    Ok(Recorded {
        run,
        episode: row,
        prepared,
        base,
        changed,
    })
}

/// Records one episode played outside `ludus run` (a fork, a re-run, a live
/// episode) as a run of its own with one episode. Its `/agent` writes are not
/// folded into the stored memory: debugging never changes what the agent
/// remembers.
pub struct BranchRecorder {
    recorder: Recorder,
    writer: Option<FrameWriter>,
    pub run_id: String,
    pub episode_id: i64,
}

impl BranchRecorder {
    /// `seed` is the episode's seed (its parent's, for a branch); `base` the
    /// memory it starts from.
    pub fn start(
        db_path: &Path,
        prepared: &Prepared,
        seed: u64,
        base: &MemoryBase,
        branch: Option<BranchOf>,
    ) -> Result<BranchRecorder, StoreError> {
        let mut spec = prepared.spec_json();
        if let Some(obj) = spec.as_object_mut() {
            let user: serde_json::Map<String, serde_json::Value> = base
                .user
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                .collect();
            obj.insert("user_memory".into(), serde_json::Value::Object(user));
            obj.insert(
                "kind".into(),
                serde_json::Value::String(if branch.is_some() { "branch" } else { "live" }.into()),
            );
        }
        let run_id = new_run_id();
        let record = RunRecord {
            id: run_id.clone(),
            seed: prepared.spec.seed,
            episodes: 1,
            jobs: 1,
            spec,
            agent_base: Some(BTreeMap::clone(&base.agent)),
            fold_agent_memory: false,
            branch,
        };
        let recorder = Recorder::start(db_path, record, &[seed])?;
        let episode_id = recorder.episode_ids[0];
        let mut writer = recorder.writer();
        writer.start(0, seed);
        Ok(BranchRecorder {
            recorder,
            writer: Some(writer),
            run_id,
            episode_id,
        })
    }

    pub fn push(&mut self, frame: &Frame, timing: Timing) {
        if let Some(w) = self.writer.as_mut() {
            w.push(0, frame, timing);
        }
    }

    /// Records the ending and waits until everything is committed.
    pub fn end(mut self, finish: EpisodeFinish) -> Result<EpisodeReport, StoreError> {
        if let Some(mut w) = self.writer.take() {
            w.end(0, finish);
            // Dropping the writer sends what it holds.
        }
        let mut reports = self.recorder.finish()?;
        reports.pop().ok_or(StoreError::NoEpisode(self.episode_id))
    }
}
