//! The `ludus` Python package's extension module (`ludus._ludus`): one wasm
//! environment plugin, stepped from Python. The package's Python side
//! (`python/ludus/__init__.py`) maps its spaces to Gymnasium's.

use std::sync::{Arc, Mutex};

use ludus_arena::episode::EpisodeTracker;
use ludus_arena::model::{Action, Frame, LogLine, Observation, Timing, Value};
use ludus_arena::plugin::{EnvInstance, Plugin, PluginKind};
use ludus_arena::recorder::{EpisodeFinish, FrameWriter, Recorder};
use ludus_arena::{Limits, Outcome};
use ludus_core::derived_seed;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

pyo3::create_exception!(
    _ludus,
    PluginCrash,
    pyo3::exceptions::PyRuntimeError,
    "The env plugin crashed (trapped, ran out of time or memory, broke the contract)."
);

/// One env plugin: a fresh instance per episode, as `ludus run` makes them.
#[pyclass]
struct WasmEnv {
    plugin: Arc<Plugin>,
    config: String,
    info: ludus_arena::model::EnvInfo,
    /// The episode in progress.
    episode: Mutex<Option<Episode>>,
    /// With `record`: the recording the episodes go to.
    recording: Mutex<Option<Recording>>,
}

/// An episode being played from Python.
struct Episode {
    env: EnvInstance,
    tracker: EpisodeTracker,
    /// The observation the next action answers.
    observation: Option<Observation>,
    index: u64,
    task: String,
    reset_info: String,
    /// Logs since the last frame (the first frame gets those of `reset`).
    logs: Vec<LogLine>,
}

/// A recording of the episodes played, as `ludus run` records them.
struct Recording {
    recorder: Option<Recorder>,
    writer: Option<FrameWriter>,
    next: u64,
    run_id: String,
}

impl Recording {
    /// Records the end of `e`: crashed with `error`, else as it ended, else
    /// interrupted.
    fn end(&mut self, e: &mut Episode, error: Option<String>) {
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
        if let Some(w) = self.writer.as_mut() {
            w.end(e.index, finish);
        }
    }
}

fn crash(c: ludus_arena::plugin::Crash) -> PyErr {
    PluginCrash::new_err(c.message)
}

/// An observation as a dict: ints, lists of floats, `(bytes, (h, w, c))`
/// for images, strings, and element trees as JSON text.
fn observation<'py>(py: Python<'py>, o: &Observation) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    for part in o {
        match &part.value {
            Value::Discrete(n) => d.set_item(&part.name, n)?,
            Value::Vector(v) => d.set_item(&part.name, v)?,
            Value::Text(t) => d.set_item(&part.name, t)?,
            Value::Image(i) => d.set_item(
                &part.name,
                (PyBytes::new(py, &i.pixels), (i.height, i.width, i.channels)),
            )?,
            Value::Tree(t) => {
                d.set_item(&part.name, serde_json::to_string(t).unwrap_or_default())?
            }
        }
    }
    Ok(d)
}

impl WasmEnv {
    fn recording(&self) -> PyResult<std::sync::MutexGuard<'_, Option<Recording>>> {
        self.recording
            .lock()
            .map_err(|_| PluginCrash::new_err("an earlier call failed"))
    }

    fn lock(&self) -> PyResult<std::sync::MutexGuard<'_, Option<Episode>>> {
        self.episode
            .lock()
            .map_err(|_| PluginCrash::new_err("an earlier call failed"))
    }
}

#[pymethods]
impl WasmEnv {
    /// Loads the plugin at `path` and checks `config` with its `init`.
    #[new]
    #[pyo3(signature = (path, config = "", record = None))]
    fn new(path: &str, config: &str, record: Option<&str>) -> PyResult<WasmEnv> {
        let plugin = Plugin::load(std::path::Path::new(path), PluginKind::Env, Limits::DEFAULT)
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
        let mut env = plugin.env(0).map_err(crash)?;
        let info = match env.init(config).map_err(crash)? {
            Ok(info) => info,
            Err(refusal) => {
                return Err(PyValueError::new_err(format!(
                    "{path} rejected its config: {}",
                    refusal.0
                )));
            }
        };
        let recording = match record {
            None => None,
            Some(db) => {
                let run_id = format!(
                    "python-{}-{}",
                    std::process::id(),
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_millis())
                );
                let spec = serde_json::json!({
                    "kind": "python",
                    "env": {"path": path, "config": config},
                });
                let recorder =
                    Recorder::start_training(std::path::Path::new(db), &run_id, 0, &spec, None)
                        .map_err(|e| PyValueError::new_err(format!("{db}: {e}")))?;
                Some(Recording {
                    writer: Some(recorder.writer()),
                    recorder: Some(recorder),
                    next: 0,
                    run_id,
                })
            }
        };
        Ok(WasmEnv {
            plugin,
            config: config.to_string(),
            info,
            episode: Mutex::new(None),
            recording: Mutex::new(recording),
        })
    }

    /// The env's description (spaces, name, step limit) as JSON text.
    fn info(&self) -> String {
        serde_json::to_string(&self.info).unwrap_or_default()
    }

    /// A new episode from `seed`: (observation, info JSON). With a
    /// recording, an episode in progress is recorded as interrupted.
    fn reset<'py>(&self, py: Python<'py>, seed: u64) -> PyResult<(Bound<'py, PyDict>, String)> {
        let (plugin, config) = (self.plugin.clone(), self.config.clone());
        let (env, reset, logs) = py
            .detach(move || -> Result<_, ludus_arena::plugin::Crash> {
                let mut env = plugin.env(derived_seed(seed, 0))?;
                let _ = env.init(&config)?;
                let reset = env.reset(seed)?;
                let logs = env.take_logs();
                Ok((env, reset, logs))
            })
            .map_err(crash)?;
        let mut episode = self.lock()?;
        let mut recording = self.recording()?;
        if let (Some(e), Some(r)) = (episode.as_mut(), recording.as_mut())
            && e.tracker.outcome().is_none()
        {
            r.end(e, None);
        }
        let index = match recording.as_mut() {
            Some(r) => {
                let index = r.next;
                r.next += 1;
                if let Some(w) = r.writer.as_mut() {
                    w.start(index, seed);
                }
                index
            }
            None => 0,
        };
        let obs = observation(py, &reset.observation)?;
        *episode = Some(Episode {
            env,
            tracker: EpisodeTracker::new(self.info.max_steps),
            observation: Some(reset.observation),
            index,
            task: reset.task,
            reset_info: reset.info.clone(),
            logs,
        });
        Ok((obs, reset.info))
    }

    /// Ends the recording (an episode in progress as interrupted) and
    /// returns its run id; `None` without one.
    fn close(&self) -> PyResult<Option<String>> {
        let mut recording = self.recording()?;
        let Some(mut r) = recording.take() else {
            return Ok(None);
        };
        if let Some(e) = self.lock()?.as_mut()
            && e.tracker.outcome().is_none()
        {
            r.end(e, None);
        }
        drop(r.writer.take());
        if let Some(rec) = r.recorder.take() {
            rec.finish_training("finished")
                .map_err(|e| PluginCrash::new_err(format!("recording: {e}")))?;
        }
        Ok(Some(r.run_id))
    }

    /// One step with `action` (the contract's action as JSON):
    /// (observation, reward, terminated, truncated, info JSON).
    fn step<'py>(
        &self,
        py: Python<'py>,
        action: &str,
    ) -> PyResult<(Bound<'py, PyDict>, f32, bool, bool, String)> {
        let action: Action = serde_json::from_str(action)
            .map_err(|e| PyValueError::new_err(format!("not an action: {e}")))?;
        let mut episode = self.lock()?;
        let Some(e) = episode.as_mut() else {
            return Err(PyValueError::new_err("call reset() before step()"));
        };
        if e.tracker.outcome().is_some() {
            return Err(PyValueError::new_err("the episode has ended: call reset()"));
        }
        let started = std::time::Instant::now();
        let env = &mut e.env;
        let result = py.detach(|| env.step(&action));
        let step_ns = started.elapsed().as_nanos() as u64;
        let r = match result {
            Ok(r) => r,
            Err(c) => {
                if let Some(rec) = self.recording()?.as_mut() {
                    rec.end(e, Some(c.message.clone()));
                }
                *episode = None;
                return Err(crash(c));
            }
        };
        let step = e.tracker.step();
        let flags = e.tracker.flags(r.terminated, r.truncated);
        e.logs.extend(e.env.take_logs());
        e.tracker.record(flags, r.reward, None, &r.info);
        let previous = e.observation.replace(r.observation.clone());
        let logs = std::mem::take(&mut e.logs);
        if let Some(rec) = self.recording()?.as_mut() {
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
            if let Some(w) = rec.writer.as_mut() {
                w.push(e.index, &frame, timing);
            }
            if flags.ended() {
                rec.end(e, None);
            }
        }
        Ok((
            observation(py, &r.observation)?,
            r.reward,
            flags.terminated,
            flags.truncated,
            r.info,
        ))
    }
}

impl Drop for WasmEnv {
    fn drop(&mut self) {
        // What was recorded is committed even without close().
        let _ = self.close();
    }
}

/// A recording, read only: runs, episodes and frames as JSON text (the
/// package turns them into tables and dicts).
#[pyclass]
struct Store {
    db: Mutex<ludus_arena::Db>,
}

fn store_err(e: ludus_arena::StoreError) -> PyErr {
    PyValueError::new_err(e.to_string())
}

#[pymethods]
impl Store {
    #[new]
    fn new(path: &str) -> PyResult<Store> {
        let p = std::path::Path::new(path);
        if !p.is_file() {
            return Err(PyValueError::new_err(format!(
                "database {path} not found (record one with `ludus run ... --db {path}`)"
            )));
        }
        let db = ludus_arena::Db::open_read_only(p).map_err(store_err)?;
        Ok(Store { db: Mutex::new(db) })
    }

    /// The runs, as a JSON list of objects.
    fn runs(&self, py: Python<'_>) -> PyResult<String> {
        let mut guard = self
            .db
            .lock()
            .map_err(|_| PluginCrash::new_err("poisoned"))?;
        let db: &mut ludus_arena::Db = &mut guard;
        let runs = py.detach(move || db.runs()).map_err(store_err)?;
        let rows: Vec<serde_json::Value> = runs
            .iter()
            .map(|r| {
                serde_json::json!({
                    "run_id": r.id, "created_at": r.created_at, "seed": r.seed,
                    "episodes": r.episodes, "status": r.status,
                    "env": r.spec["env"]["path"], "kind": r.spec["kind"],
                })
            })
            .collect();
        Ok(serde_json::Value::from(rows).to_string())
    }

    /// A run's episodes (every run's with `None`), with their model calls'
    /// totals, as a JSON list of objects.
    #[pyo3(signature = (run = None))]
    fn episodes(&self, py: Python<'_>, run: Option<String>) -> PyResult<String> {
        let mut guard = self
            .db
            .lock()
            .map_err(|_| PluginCrash::new_err("poisoned"))?;
        let db: &mut ludus_arena::Db = &mut guard;
        let rows = py
            .detach(
                move || -> Result<Vec<serde_json::Value>, ludus_arena::StoreError> {
                    let runs: Vec<String> = match &run {
                        Some(r) => vec![r.clone()],
                        None => db.runs()?.into_iter().map(|r| r.id).collect(),
                    };
                    let mut rows = Vec::new();
                    for r in runs {
                        for e in db.episodes(&r)? {
                            let mut totals = ludus_arena::model::ModelTotals::default();
                            for (_, call) in db.model_calls(e.id, 0..=u64::MAX)? {
                                totals.add(&call);
                            }
                            let mut row = serde_json::to_value(&e).unwrap_or_default();
                            if let Some(o) = row.as_object_mut() {
                                o.insert("episode".into(), e.id.into());
                                o.insert("model_calls".into(), totals.model_calls.into());
                                o.insert("tokens_in".into(), totals.tokens_in.into());
                                o.insert("tokens_out".into(), totals.tokens_out.into());
                                o.insert("cost_usd".into(), totals.cost_usd.into());
                            }
                            rows.push(row);
                        }
                    }
                    Ok(rows)
                },
            )
            .map_err(store_err)?;
        Ok(serde_json::Value::from(rows).to_string())
    }

    /// An episode's frames as a JSON list (observations with images as
    /// references, as `ludus export` writes them).
    fn frames(&self, py: Python<'_>, episode: i64) -> PyResult<String> {
        let mut guard = self
            .db
            .lock()
            .map_err(|_| PluginCrash::new_err("poisoned"))?;
        let db: &mut ludus_arena::Db = &mut guard;
        db.episode(episode).map_err(store_err)?;
        let frames = py.detach(move || db.frames(episode)).map_err(store_err)?;
        let v: Vec<serde_json::Value> = frames
            .iter()
            .map(|(f, _)| ludus_arena::export::frame_json(f, episode))
            .collect();
        Ok(serde_json::Value::from(v).to_string())
    }
}

#[pymodule]
fn _ludus(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<WasmEnv>()?;
    m.add_class::<Store>()?;
    m.add("PluginCrash", m.py().get_type::<PluginCrash>())?;
    Ok(())
}
