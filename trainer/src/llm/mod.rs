//! Language models in this process: GGUF files and Hugging Face folders
//! read into a Llama-family decoder on libtorch, their tokenizers and chat
//! templates, and the built-in backend that answers model calls with them
//! (`--model [NAME=]policy:PATH`).

pub mod backend;
pub mod decoder;
pub mod gguf;
pub mod grpo;
pub mod text;
pub mod tiny;

use std::path::PathBuf;
use std::sync::Arc;

pub use backend::{PolicyModel, PolicyModels};
use ludus_arena::chat::{Clients, ModelClient, ModelSetup};

/// `[NAME=]policy:PATH` as (name, path); `None` for any other `--model`
/// value.
pub fn policy_spec(value: &str) -> Option<(String, PathBuf)> {
    let (name, rest) = match value.split_once('=') {
        Some((n, r)) if !n.contains(':') && !n.contains('/') => (n.trim(), r.trim()),
        _ => ("default", value.trim()),
    };
    let path = rest.strip_prefix("policy:")?;
    Some((name.to_string(), PathBuf::from(path)))
}

/// A run's model access from its `--model` values: `policy:` endpoints are
/// served in this process (on the CPU), the others over HTTP.
pub fn setup(models: &[String], cost_cap_usd: Option<f64>) -> Result<ModelSetup, String> {
    let (policies, http): (Vec<&String>, Vec<&String>) =
        models.iter().partition(|m| policy_spec(m).is_some());
    let http: Vec<String> = http.into_iter().cloned().collect();
    let mut setup = ludus_llm::setup(&http, cost_cap_usd).map_err(|e| e.to_string())?;
    if policies.is_empty() {
        return Ok(setup);
    }
    let specs: Vec<(String, PathBuf)> = policies.iter().filter_map(|m| policy_spec(m)).collect();
    for (i, (name, _)) in specs.iter().enumerate() {
        let twice = specs[..i].iter().any(|(n, _)| n == name)
            || setup.client.as_ref().is_some_and(|c| c.has_endpoint(name));
        if twice {
            return Err(format!("--model: endpoint `{name}` is given twice"));
        }
    }
    let local = PolicyModels::open(&specs, tch::Device::Cpu).map_err(|e| e.to_string())?;
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
        assert_eq!(
            policy_spec("policy:models/x.gguf"),
            Some(("default".into(), PathBuf::from("models/x.gguf")))
        );
        assert_eq!(
            policy_spec("judge=policy:/m/dir"),
            Some(("judge".into(), PathBuf::from("/m/dir")))
        );
        assert_eq!(policy_spec("http://127.0.0.1:8080"), None);
        assert_eq!(policy_spec("judge=http://h:1,model=m"), None);
    }
}
