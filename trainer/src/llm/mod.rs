//! Language models in this process: GGUF files and Hugging Face folders
//! read into a Llama-family decoder on libtorch, their tokenizers and chat
//! templates, and the built-in backend that answers model calls with them
//! (`--model [NAME=]policy:PATH`).

pub mod backend;
pub mod decoder;
pub mod engine;
pub mod gguf;
pub mod grpo;
pub mod schema;
pub mod text;
pub mod tiny;

use std::path::PathBuf;
use std::sync::Arc;

use crate::config::Dtype;
use crate::options::DeviceChoice;
pub use backend::PolicyModel;
pub use engine::{PolicyModels, PolicySpec};
use ludus_arena::chat::{Clients, ModelClient, ModelSetup};

/// `[NAME=]policy:PATH[,batch=N][,dtype=f32|bf16][,device=cpu|cuda|auto]`,
/// read; `None` for any other `--model` value.
pub fn policy_spec(value: &str) -> Option<Result<PolicySpec, String>> {
    let (name, rest) = match value.split_once('=') {
        Some((n, r)) if !n.contains(':') && !n.contains('/') => (n.trim(), r.trim()),
        _ => ("default", value.trim()),
    };
    let rest = rest.strip_prefix("policy:")?;
    let mut parts = rest.split(',');
    let path = PathBuf::from(parts.next().unwrap_or_default().trim());
    let mut spec = PolicySpec {
        name: name.to_string(),
        path,
        batch: backend::DEFAULT_BATCH,
        dtype: Dtype::F32,
        device: DeviceChoice::Cpu,
    };
    for part in parts {
        let (key, v) = part.split_once('=').unwrap_or((part, ""));
        match key.trim() {
            "batch" => match v.trim().parse::<usize>() {
                Ok(n) if (1..=backend::MAX_BATCH).contains(&n) => spec.batch = n,
                _ => {
                    return Some(Err(format!(
                        "--model {value}: batch must be a whole number from 1 to {}",
                        backend::MAX_BATCH
                    )));
                }
            },
            "dtype" => match v.trim() {
                "f32" => spec.dtype = Dtype::F32,
                "bf16" => spec.dtype = Dtype::Bf16,
                _ => {
                    return Some(Err(format!("--model {value}: dtype must be f32 or bf16")));
                }
            },
            "device" => match v.trim() {
                "cpu" => spec.device = DeviceChoice::Cpu,
                "cuda" => spec.device = DeviceChoice::Cuda,
                "auto" => spec.device = DeviceChoice::Auto,
                _ => {
                    return Some(Err(format!(
                        "--model {value}: device must be cpu, cuda or auto"
                    )));
                }
            },
            other => {
                return Some(Err(format!(
                    "--model {value}: unknown option `{other}` for a policy: model (it takes batch=N, dtype=f32|bf16 and device=cpu|cuda|auto)"
                )));
            }
        }
    }
    Some(Ok(spec))
}

/// A run's model access from its `--model` values: `policy:` endpoints are
/// served in this process (on the CPU unless they name a device), the
/// others over HTTP.
pub fn setup(models: &[String], cost_cap_usd: Option<f64>) -> Result<ModelSetup, String> {
    let (policies, http): (Vec<&String>, Vec<&String>) =
        models.iter().partition(|m| policy_spec(m).is_some());
    let http: Vec<String> = http.into_iter().cloned().collect();
    let mut setup = ludus_llm::setup(&http, cost_cap_usd).map_err(|e| e.to_string())?;
    if policies.is_empty() {
        return Ok(setup);
    }
    let specs: Vec<PolicySpec> = policies
        .iter()
        .filter_map(|m| policy_spec(m))
        .collect::<Result<_, _>>()?;
    for (i, PolicySpec { name, .. }) in specs.iter().enumerate() {
        let twice = specs[..i].iter().any(|s| &s.name == name)
            || setup.client.as_ref().is_some_and(|c| c.has_endpoint(name));
        if twice {
            return Err(format!("--model: endpoint `{name}` is given twice"));
        }
    }
    let local = PolicyModels::open(&specs).map_err(|e| e.to_string())?;
    let local: Arc<dyn ModelClient> = Arc::new(local);
    setup.client = Some(match setup.client.take() {
        Some(remote) => Arc::new(Clients(vec![local, remote])),
        None => local,
    });
    Ok(setup)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_specs_are_told_from_urls() {
        let spec = |name: &str, path: &str, batch| {
            Some(Ok(PolicySpec {
                name: name.into(),
                path: PathBuf::from(path),
                batch,
                dtype: Dtype::F32,
                device: DeviceChoice::Cpu,
            }))
        };
        assert_eq!(
            policy_spec("policy:models/x.gguf"),
            spec("default", "models/x.gguf", backend::DEFAULT_BATCH)
        );
        assert_eq!(
            policy_spec("judge=policy:/m/dir,batch=32"),
            spec("judge", "/m/dir", 32)
        );
        assert_eq!(
            policy_spec("policy:m.gguf,dtype=bf16,batch=4"),
            Some(Ok(PolicySpec {
                dtype: Dtype::Bf16,
                ..spec("default", "m.gguf", 4)
                    .and_then(Result::ok)
                    .expect("spec")
            }))
        );
        assert_eq!(
            policy_spec("policy:m.gguf,dtype=f32"),
            spec("default", "m.gguf", backend::DEFAULT_BATCH)
        );
        assert_eq!(
            policy_spec("policy:m.gguf,device=cuda"),
            Some(Ok(PolicySpec {
                device: DeviceChoice::Cuda,
                ..spec("default", "m.gguf", backend::DEFAULT_BATCH)
                    .and_then(Result::ok)
                    .expect("spec")
            }))
        );
        assert_eq!(policy_spec("http://127.0.0.1:8080"), None);
        assert_eq!(policy_spec("judge=http://h:1,model=m"), None);
        for bad in [
            "policy:m.gguf,batch=0",
            "policy:m.gguf,batch=x",
            "policy:m.gguf,slots=2",
            "policy:m.gguf,dtype=f16",
            "policy:m.gguf,device=gpu",
        ] {
            let err = policy_spec(bad).expect("a policy").expect_err("refused");
            assert!(err.starts_with(&format!("--model {bad}: ")), "{err}");
        }
    }
}
