//! The `ludus` Python package's extension module (`ludus._ludus`): one wasm
//! environment plugin, stepped from Python. The package's Python side
//! (`python/ludus/__init__.py`) maps its spaces to Gymnasium's.

use std::sync::{Arc, Mutex, MutexGuard};

use ludus_arena::Limits;
use ludus_arena::driven::{DrivenEnv, DrivenError, Recording};
use ludus_arena::model::{Action, Observation, Value};
use ludus_arena::plugin::{EnvInstance, Plugin, PluginKind};
use ludus_core::derived_seed;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyDict};

pyo3::create_exception!(
    _ludus,
    PluginCrash,
    pyo3::exceptions::PyRuntimeError,
    "The env plugin crashed (trapped, ran out of time or memory, broke the contract)."
);

/// One env plugin, as `ludus run` runs it (`ludus_arena::driven`): a fresh
/// instance per episode; with `record`, its episodes recorded into one run.
#[pyclass]
struct WasmEnv {
    env: Mutex<DrivenEnv>,
    recording: Mutex<Option<Arc<Recording>>>,
}

fn crash(c: ludus_arena::plugin::Crash) -> PyErr {
    PluginCrash::new_err(c.message)
}

/// The plugin's limits: the defaults `ludus run` uses, with the keys of
/// `overrides` (a JSON object, as `ludus.make(limits={...})` passes it)
/// replaced.
fn limits(overrides: Option<&str>) -> PyResult<Limits> {
    let Some(text) = overrides else {
        return Ok(Limits::DEFAULT);
    };
    let bad = |e: String| PyValueError::new_err(format!("limits: {e}"));
    let mut merged = serde_json::to_value(Limits::DEFAULT).map_err(|e| bad(e.to_string()))?;
    let given: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
    for (key, value) in given {
        match merged.get_mut(&key) {
            Some(slot) => *slot = value,
            None => {
                let known: Vec<String> = merged
                    .as_object()
                    .map(|o| o.keys().cloned().collect())
                    .unwrap_or_default();
                return Err(bad(format!(
                    "unknown limit `{key}` (known: {})",
                    known.join(", ")
                )));
            }
        }
    }
    serde_json::from_value(merged).map_err(|e| bad(e.to_string()))
}

/// Loads the env plugin at `path` and runs its `init` with `config`.
fn load_env(
    path: &str,
    config: &str,
    limits: Limits,
) -> PyResult<(Arc<Plugin>, ludus_arena::model::EnvInfo)> {
    let plugin = Plugin::load(std::path::Path::new(path), PluginKind::Env, limits)
        .map_err(|e| PyValueError::new_err(e.to_string()))?;
    let mut env = plugin.env(0).map_err(crash)?;
    match env.init(config).map_err(crash)? {
        Ok(info) => Ok((plugin, info)),
        Err(refusal) => Err(PyValueError::new_err(format!(
            "{path} rejected its config: {}",
            refusal.0
        ))),
    }
}

/// `values` as little-endian bytes, in a `bytearray` (which
/// `numpy.frombuffer` reads into a writable array without a copy).
fn f32_bytes<'py>(py: Python<'py>, values: &[f32]) -> PyResult<Bound<'py, PyByteArray>> {
    PyByteArray::new_with(py, values.len() * 4, |out| {
        for (chunk, v) in out.chunks_exact_mut(4).zip(values) {
            chunk.copy_from_slice(&v.to_le_bytes());
        }
        Ok(())
    })
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

fn driven(e: DrivenError) -> PyErr {
    match e {
        DrivenError::Crash(c) => crash(c),
        other => PyValueError::new_err(other.to_string()),
    }
}

impl WasmEnv {
    fn lock(&self) -> PyResult<MutexGuard<'_, DrivenEnv>> {
        self.env
            .lock()
            .map_err(|_| PluginCrash::new_err("an earlier call failed"))
    }
}

#[pymethods]
impl WasmEnv {
    /// Loads the plugin at `path` and checks `config` with its `init`.
    #[new]
    #[pyo3(signature = (path, config = "", record = None, limits = None))]
    fn new(
        path: &str,
        config: &str,
        record: Option<&str>,
        limits: Option<&str>,
    ) -> PyResult<WasmEnv> {
        let (plugin, info) = load_env(path, config, self::limits(limits)?)?;
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
                Some(
                    Recording::start(std::path::Path::new(db), &run_id, &spec)
                        .map_err(|e| PyValueError::new_err(format!("{db}: {e}")))?,
                )
            }
        };
        Ok(WasmEnv {
            env: Mutex::new(DrivenEnv::new(plugin, config, info, recording.clone())),
            recording: Mutex::new(recording),
        })
    }

    /// The env's description (spaces, name, step limit) as JSON text.
    fn info(&self) -> PyResult<String> {
        Ok(serde_json::to_string(self.lock()?.info()).unwrap_or_default())
    }

    /// A new episode from `seed`: (observation, info JSON). With a
    /// recording, an episode in progress is recorded as interrupted.
    fn reset<'py>(&self, py: Python<'py>, seed: u64) -> PyResult<(Bound<'py, PyDict>, String)> {
        let mut env = self.lock()?;
        let env: &mut DrivenEnv = &mut env;
        let reset = py.detach(|| env.reset(seed)).map_err(crash)?;
        Ok((observation(py, &reset.observation)?, reset.info))
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
        let mut env = self.lock()?;
        let env: &mut DrivenEnv = &mut env;
        let r = py.detach(|| env.step(action)).map_err(driven)?;
        Ok((
            observation(py, &r.observation)?,
            r.reward,
            r.terminated,
            r.truncated,
            r.info,
        ))
    }

    /// The flat observation's length where the env may be stepped by the
    /// contract's fast path (`reset_vector`/`step_vector`): its observation
    /// is one vector of at most 8 values, the plugin offers the fast path,
    /// and nothing is recorded (recording takes `reset`/`step`); else 0.
    fn vector_size(&self) -> PyResult<usize> {
        self.lock()?.vector_size().map_err(crash)
    }

    /// A new episode from `seed` by the fast path: the observation as
    /// little-endian f32 bytes, or `None` where the plugin declines (call
    /// `reset`).
    fn reset_vector<'py>(
        &self,
        py: Python<'py>,
        seed: u64,
    ) -> PyResult<Option<Bound<'py, PyByteArray>>> {
        let mut env = self.lock()?;
        let env: &mut DrivenEnv = &mut env;
        match py.detach(|| env.reset_vector(seed)).map_err(crash)? {
            Some(first) => Ok(Some(f32_bytes(py, &first)?)),
            None => Ok(None),
        }
    }

    /// One step by the fast path (`action`: a discrete action's index, or
    /// the continuous values): (observation bytes, reward, terminated,
    /// truncated), or `None` where the plugin declines (call `step`).
    #[allow(clippy::type_complexity)]
    fn step_vector<'py>(
        &self,
        py: Python<'py>,
        action: Vec<f32>,
    ) -> PyResult<Option<(Bound<'py, PyByteArray>, f32, bool, bool)>> {
        let mut env = self.lock()?;
        let env: &mut DrivenEnv = &mut env;
        let Some(stepped) = py.detach(|| env.step_vector(&action)).map_err(driven)? else {
            return Ok(None);
        };
        let size = (env.info().vector_size as usize).min(stepped.observation.len());
        Ok(Some((
            f32_bytes(py, &stepped.observation[..size])?,
            stepped.reward,
            stepped.terminated,
            stepped.truncated,
        )))
    }

    /// Ends the recording (an episode in progress as interrupted) and
    /// returns its run id; `None` without one.
    fn close(&self) -> PyResult<Option<String>> {
        self.lock()?.close();
        let Some(recording) = self
            .recording
            .lock()
            .map_err(|_| PluginCrash::new_err("an earlier call failed"))?
            .take()
        else {
            return Ok(None);
        };
        let run_id = recording.run_id().to_string();
        recording
            .finish()
            .map_err(|e| PluginCrash::new_err(format!("recording: {e}")))?;
        Ok(Some(run_id))
    }
}

impl Drop for WasmEnv {
    fn drop(&mut self) {
        // What was recorded is committed even without close().
        let _ = self.close();
    }
}

/// `num_envs` copies of a vector env stepped together through the
/// contract's batched interface (`batch-reset`/`batch-step`): one call into
/// the plugin per step of all copies. A copy that ends is reset in place
/// with its next seed in the same step. Nothing is recorded.
#[pyclass]
struct BatchEnv {
    plugin: Arc<Plugin>,
    config: String,
    num_envs: usize,
    /// Values per copy: observation, action.
    size: usize,
    width: usize,
    /// The copies, from `reset`; `None` before it and after a crash.
    env: Mutex<Option<EnvInstance>>,
}

#[pymethods]
impl BatchEnv {
    #[new]
    #[pyo3(signature = (path, num_envs, config = "", limits = None))]
    fn new(path: &str, num_envs: usize, config: &str, limits: Option<&str>) -> PyResult<BatchEnv> {
        let (plugin, info) = load_env(path, config, self::limits(limits)?)?;
        if info.vector_size == 0 {
            return Err(PyValueError::new_err(format!(
                "{path}: env `{}` has no single-vector observation, so it cannot be batched \
                 (use vectorization_mode=\"sync\")",
                info.name
            )));
        }
        if num_envs == 0 {
            return Err(PyValueError::new_err("num_envs must be at least 1"));
        }
        let a = &info.action_space;
        let width = if a.discrete.is_some() {
            1
        } else if let Some(b) = &a.continuous {
            b.shape.iter().product::<u32>() as usize
        } else {
            return Err(PyValueError::new_err(format!(
                "{path}: env `{}` takes neither discrete nor continuous actions, so it cannot be batched",
                info.name
            )));
        };
        Ok(BatchEnv {
            plugin,
            config: config.to_string(),
            num_envs,
            size: info.vector_size as usize,
            width,
            env: Mutex::new(None),
        })
    }

    /// Values per copy: (observation, action).
    fn sizes(&self) -> (usize, usize) {
        (self.size, self.width)
    }

    /// New copies, one per seed (`num_envs` of them): their observations
    /// as little-endian f32 bytes, copy after copy.
    fn reset<'py>(&self, py: Python<'py>, seeds: Vec<u64>) -> PyResult<Bound<'py, PyByteArray>> {
        if seeds.len() != self.num_envs {
            return Err(PyValueError::new_err(format!(
                "reset got {} seeds for {} envs",
                seeds.len(),
                self.num_envs
            )));
        }
        let mut slot = self
            .env
            .lock()
            .map_err(|_| PluginCrash::new_err("an earlier call failed"))?;
        *slot = None;
        let (plugin, config) = (self.plugin.clone(), self.config.clone());
        let (env, first) = py
            .detach(move || -> Result<_, ludus_arena::plugin::Crash> {
                let mut env = plugin.env(derived_seed(seeds[0], 0))?;
                let _ = env.init(&config)?;
                let first = env.batch_reset(&seeds)?;
                Ok((env, first))
            })
            .map_err(crash)?;
        let first = first.map_err(|r| PluginCrash::new_err(r.0))?;
        if first.len() != self.num_envs * self.size {
            return Err(PluginCrash::new_err(format!(
                "batch-reset returned {} values for {} copies of {}",
                first.len(),
                self.num_envs,
                self.size
            )));
        }
        *slot = Some(env);
        f32_bytes(py, &first)
    }

    /// One step of every copy (`actions`: little-endian f32 bytes, the
    /// copies' actions one after another): (observations, rewards as f32
    /// bytes, flags: one byte per copy, bit 0 terminated, bit 1 truncated).
    #[allow(clippy::type_complexity)]
    fn step<'py>(
        &self,
        py: Python<'py>,
        actions: &[u8],
    ) -> PyResult<(
        Bound<'py, PyByteArray>,
        Bound<'py, PyByteArray>,
        Bound<'py, PyBytes>,
    )> {
        if actions.len() != self.num_envs * self.width * 4 {
            return Err(PyValueError::new_err(format!(
                "step got {} action values for {} envs of {}",
                actions.len() / 4,
                self.num_envs,
                self.width
            )));
        }
        let actions: Vec<f32> = actions
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let mut slot = self
            .env
            .lock()
            .map_err(|_| PluginCrash::new_err("an earlier call failed"))?;
        let Some(env) = slot.as_mut() else {
            return Err(PyValueError::new_err("call reset() before step()"));
        };
        let stepped = match py.detach(|| env.batch_step(&actions)) {
            Ok(Ok(r)) => r,
            Ok(Err(refusal)) => return Err(PluginCrash::new_err(refusal.0)),
            Err(c) => {
                *slot = None;
                return Err(crash(c));
            }
        };
        let n = self.num_envs;
        if stepped.observations.len() != n * self.size
            || stepped.rewards.len() != n
            || stepped.flags.len() != n
        {
            *slot = None;
            return Err(PluginCrash::new_err(format!(
                "batch-step returned {} observation values, {} rewards and {} flags for {n} copies",
                stepped.observations.len(),
                stepped.rewards.len(),
                stepped.flags.len()
            )));
        }
        Ok((
            f32_bytes(py, &stepped.observations)?,
            f32_bytes(py, &stepped.rewards)?,
            PyBytes::new(py, &stepped.flags),
        ))
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
    m.add_class::<BatchEnv>()?;
    m.add_class::<Store>()?;
    m.add("PluginCrash", m.py().get_type::<PluginCrash>())?;
    Ok(())
}
