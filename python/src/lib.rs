//! The `ludus` Python package's extension module (`ludus._ludus`): one wasm
//! environment plugin, stepped from Python. The package's Python side
//! (`python/ludus/__init__.py`) maps its spaces to Gymnasium's.

use std::sync::{Arc, Mutex};

use ludus_arena::Limits;
use ludus_arena::model::{Action, Observation, Value};
use ludus_arena::plugin::{EnvInstance, Plugin, PluginKind};
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
    /// The episode's instance, and its steps so far.
    episode: Mutex<Option<(EnvInstance, u32)>>,
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
    fn lock(&self) -> PyResult<std::sync::MutexGuard<'_, Option<(EnvInstance, u32)>>> {
        self.episode
            .lock()
            .map_err(|_| PluginCrash::new_err("an earlier call failed"))
    }
}

#[pymethods]
impl WasmEnv {
    /// Loads the plugin at `path` and checks `config` with its `init`.
    #[new]
    #[pyo3(signature = (path, config = ""))]
    fn new(path: &str, config: &str) -> PyResult<WasmEnv> {
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
        Ok(WasmEnv {
            plugin,
            config: config.to_string(),
            info,
            episode: Mutex::new(None),
        })
    }

    /// The env's description (spaces, name, step limit) as JSON text.
    fn info(&self) -> String {
        serde_json::to_string(&self.info).unwrap_or_default()
    }

    /// A new episode from `seed`: (observation, info JSON).
    fn reset<'py>(&self, py: Python<'py>, seed: u64) -> PyResult<(Bound<'py, PyDict>, String)> {
        let (plugin, config) = (self.plugin.clone(), self.config.clone());
        let (env, reset) = py
            .detach(move || -> Result<_, ludus_arena::plugin::Crash> {
                let mut env = plugin.env(derived_seed(seed, 0))?;
                let _ = env.init(&config)?;
                let reset = env.reset(seed)?;
                Ok((env, reset))
            })
            .map_err(crash)?;
        *self.lock()? = Some((env, 0));
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
        let mut episode = self.lock()?;
        let Some((env, steps)) = episode.as_mut() else {
            return Err(PyValueError::new_err("call reset() before step()"));
        };
        let r = match py.detach(|| env.step(&action)) {
            Ok(r) => r,
            Err(c) => {
                *episode = None;
                return Err(crash(c));
            }
        };
        *steps += 1;
        let limit = self.info.max_steps;
        let truncated = r.truncated || (limit > 0 && *steps >= limit && !r.terminated);
        Ok((
            observation(py, &r.observation)?,
            r.reward,
            r.terminated,
            truncated,
            r.info,
        ))
    }
}

#[pymodule]
fn _ludus(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<WasmEnv>()?;
    m.add("PluginCrash", m.py().get_type::<PluginCrash>())?;
    Ok(())
}
