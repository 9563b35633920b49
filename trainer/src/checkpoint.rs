//! Checkpoints: one safetensors file holding the policy's parameters, the
//! optimizer's state and, as a `meta` tensor of JSON bytes, everything else a
//! resumed run needs (update counter, RNG states, the samplers' episodes in
//! progress in sync mode, episode numbering, recent returns).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::{Device, Tensor};

use crate::policy::Spec;
use crate::rng::Rng;
use crate::sampler::SamplerState;

pub const FORMAT: u32 = 1;

/// An episode's key across segments: (sampler, slot, counter).
pub type EpisodeKey = (usize, usize, u64);

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    pub format: u32,
    pub run: String,
    pub update: u64,
    pub adam_step: i64,
    pub learner_rng: Rng,
    pub spec: Spec,
    /// The samplers' state at the round boundary (sync mode only).
    pub samplers: Option<Vec<SamplerState>>,
    pub next_episode: u64,
    /// Episodes in progress: key, index, steps recorded so far.
    pub open_episodes: Vec<(EpisodeKey, u64, u64)>,
    pub recent_returns: Vec<f64>,
    pub env_steps: u64,
}

/// Everything in a checkpoint file.
pub struct Checkpoint {
    pub meta: Meta,
    /// Parameter values by name, in the policy's order.
    pub params: Vec<(String, Vec<f32>)>,
    pub adam_m: Vec<Vec<f32>>,
    pub adam_v: Vec<Vec<f32>>,
}

#[derive(Debug, thiserror::Error)]
#[error("checkpoint {path}: {message}")]
pub struct CheckpointError {
    pub path: PathBuf,
    pub message: String,
}

fn flat(v: &[f32]) -> Tensor {
    Tensor::from_slice(v)
}

/// Writes atomically (a temporary file renamed into place).
pub fn save(path: &Path, ck: &Checkpoint) -> Result<(), CheckpointError> {
    let err = |message: String| CheckpointError {
        path: path.to_path_buf(),
        message,
    };
    let meta = serde_json::to_vec(&ck.meta).map_err(|e| err(e.to_string()))?;
    let mut tensors: Vec<(String, Tensor)> = vec![("meta".into(), Tensor::from_slice(&meta))];
    for (i, (name, v)) in ck.params.iter().enumerate() {
        tensors.push((format!("param.{name}"), flat(v)));
        if let (Some(m), Some(s)) = (ck.adam_m.get(i), ck.adam_v.get(i)) {
            tensors.push((format!("adam.m.{name}"), flat(m)));
            tensors.push((format!("adam.v.{name}"), flat(s)));
        }
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| err(format!("cannot create its folder: {e}")))?;
    }
    let tmp = path.with_extension("safetensors.tmp");
    Tensor::write_safetensors(&tensors, &tmp).map_err(|e| err(e.to_string()))?;
    std::fs::rename(&tmp, path).map_err(|e| err(e.to_string()))?;
    Ok(())
}

pub fn load(path: &Path) -> Result<Checkpoint, CheckpointError> {
    let err = |message: String| CheckpointError {
        path: path.to_path_buf(),
        message,
    };
    if !path.exists() {
        return Err(err("file not found (nothing to resume from)".into()));
    }
    let tensors = Tensor::read_safetensors(path)
        .map_err(|e| err(format!("not a readable safetensors file: {e}")))?;
    let get = |name: &str| -> Option<Vec<f32>> {
        tensors
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, t)| Vec::<f32>::try_from(&t.to_device(Device::Cpu)).ok())
    };
    let meta_t = tensors
        .iter()
        .find(|(n, _)| n == "meta")
        .ok_or_else(|| err("no `meta` entry: not a ludus checkpoint".into()))?;
    let bytes = Vec::<u8>::try_from(&meta_t.1).map_err(|e| err(e.to_string()))?;
    let meta: Meta = serde_json::from_slice(&bytes).map_err(|e| err(format!("bad meta: {e}")))?;
    if meta.format != FORMAT {
        return Err(err(format!(
            "format {} (this ludus reads {FORMAT})",
            meta.format
        )));
    }
    let mut params = Vec::new();
    let (mut adam_m, mut adam_v) = (Vec::new(), Vec::new());
    // The order of parameters is the policy's; recover it from the spec.
    let names = crate::policy::Policy::param_names(&meta.spec);
    for name in names {
        let v = get(&format!("param.{name}"))
            .ok_or_else(|| err(format!("missing parameter `{name}`")))?;
        params.push((name.clone(), v));
        adam_m.push(get(&format!("adam.m.{name}")).unwrap_or_default());
        adam_v.push(get(&format!("adam.v.{name}")).unwrap_or_default());
    }
    Ok(Checkpoint {
        meta,
        params,
        adam_m,
        adam_v,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Head, Policy};

    #[test]
    fn round_trips_parameters_optimizer_and_meta() {
        let spec = Spec::mlp(vec![(0.0, 1.0); 4], Head::Discrete { n: 2 }, vec![8]);
        let policy = Policy::new(spec.clone(), 3, Device::Cpu);
        let values = policy.values();
        let ck = Checkpoint {
            meta: Meta {
                format: FORMAT,
                run: "r".into(),
                update: 7,
                adam_step: 70,
                learner_rng: Rng::new(9),
                spec,
                samplers: None,
                next_episode: 12,
                open_episodes: vec![((0, 1, 2), 11, 30)],
                recent_returns: vec![1.5, 2.5],
                env_steps: 1234,
            },
            params: policy.names.iter().cloned().zip(values.clone()).collect(),
            adam_m: values
                .iter()
                .map(|v| v.iter().map(|x| x * 2.0).collect())
                .collect(),
            adam_v: values
                .iter()
                .map(|v| v.iter().map(|x| x * x).collect())
                .collect(),
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.safetensors");
        save(&path, &ck).unwrap();
        let back = load(&path).unwrap();
        assert_eq!(back.meta, ck.meta);
        assert_eq!(back.params, ck.params);
        assert_eq!(back.adam_m, ck.adam_m);
        assert_eq!(back.adam_v, ck.adam_v);
        let missing = load(&dir.path().join("nope.safetensors")).err().unwrap();
        assert!(
            missing.to_string().contains("nope.safetensors"),
            "{missing}"
        );
    }
}
