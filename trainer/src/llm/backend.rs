//! The built-in model backend: `--model [NAME=]policy:PATH` answers the
//! plugins' model calls in this process, with no server, from a GGUF file
//! or a Hugging Face folder.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use ludus_arena::chat::{
    ChatRequest, ChatResponse, ContentPart, GeneratedToken, LiveAnswer, ModelClient, ModelError,
};
use ludus_arena::model::Observation;
use ludus_core::SplitMix64;
use tch::{Device, Kind, Tensor};

use super::decoder::{KvCache, Llama, LoadError};
use super::gguf::Gguf;
use super::text::ModelText;

/// Completion tokens when a request gives no `max-tokens`.
const DEFAULT_MAX_TOKENS: u32 = 256;

/// A language model and its text side.
pub struct PolicyModel {
    pub name: String,
    pub llama: Llama,
    pub text: ModelText,
}

/// Why a `policy:` model could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("--model policy:{path}: {message}")]
    Open { path: PathBuf, message: String },
}

/// What one generation gave.
#[derive(Clone, Debug, PartialEq)]
pub struct Generated {
    pub prompt_ids: Vec<u32>,
    /// The generated tokens, with the end-of-turn token that ended them.
    pub ids: Vec<u32>,
    /// Each generated token's log-probability under the model (temperature 1).
    pub logprobs: Vec<f32>,
    /// `stop` (an end-of-turn token or a stop string) or `length`.
    pub finish: &'static str,
    pub text: String,
}

/// How to pick tokens.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sampling {
    /// 0: greedy.
    pub temperature: f32,
    pub top_p: f32,
    pub max_tokens: u32,
    pub seed: u64,
}

impl PolicyModel {
    /// A GGUF file, or a folder with `config.json`, `*.safetensors` and
    /// `tokenizer.json`.
    pub fn open(path: &Path, device: Device) -> Result<PolicyModel, OpenError> {
        let fail = |message: String| OpenError::Open {
            path: path.to_path_buf(),
            message,
        };
        let name = path
            .file_stem()
            .map_or_else(|| "policy".into(), |s| s.to_string_lossy().into_owned());
        if path.is_dir() {
            let llama = Llama::from_folder(path, device).map_err(|e| fail(e.to_string()))?;
            let text = ModelText::from_folder(path).map_err(|e| fail(e.to_string()))?;
            return Ok(PolicyModel { name, llama, text });
        }
        let bytes = std::fs::read(path).map_err(|e| {
            fail(match e.kind() {
                std::io::ErrorKind::NotFound => {
                    "no such file (give a .gguf file or a Hugging Face folder)".into()
                }
                _ => e.to_string(),
            })
        })?;
        let g = Gguf::parse(bytes).map_err(|e| fail(e.to_string()))?;
        let llama = Llama::from_gguf(&g, device).map_err(|e: LoadError| fail(e.to_string()))?;
        let text = ModelText::from_gguf(&g).map_err(|e| fail(e.to_string()))?;
        if llama.config.vocab < text.tokenizer.get_vocab_size(true) as i64 {
            return Err(fail(format!(
                "its tokenizer has {} tokens, its embeddings {}",
                text.tokenizer.get_vocab_size(true),
                llama.config.vocab
            )));
        }
        Ok(PolicyModel { name, llama, text })
    }

    /// Generates from `prompt_ids` until an end-of-turn token, a stop
    /// string or `max_tokens`.
    pub fn generate(&self, prompt_ids: &[u32], sampling: Sampling, stop: &[String]) -> Generated {
        tch::no_grad(|| {
            let mut cache = KvCache::default();
            let mut rng = SplitMix64::new(sampling.seed);
            let input: Vec<i64> = prompt_ids.iter().map(|i| i64::from(*i)).collect();
            let mut logits = self.last_logits(&input, &mut cache);
            let (mut ids, mut logprobs) = (Vec::new(), Vec::new());
            let mut finish = "length";
            let mut text = String::new();
            let room = (self.llama.config.context - prompt_ids.len() as i64).max(0) as u32;
            for _ in 0..sampling.max_tokens.min(room) {
                let logp = logits.log_softmax(-1, Kind::Float);
                let logp: Vec<f32> =
                    Vec::try_from(&logp.to_device(Device::Cpu)).unwrap_or_default();
                let id = pick(&logp, sampling, &mut rng);
                // An end-of-turn token is generated like any other (training
                // credits the choice to stop), but is not part of the text.
                ids.push(id);
                logprobs.push(logp.get(id as usize).copied().unwrap_or(f32::NEG_INFINITY));
                if self.text.stop_ids.contains(&id) {
                    finish = "stop";
                    break;
                }
                if stop.is_empty() {
                    logits = self.last_logits(&[i64::from(id)], &mut cache);
                    continue;
                }
                // Stop strings are looked for in the text so far.
                text = self.text.decode(&ids);
                if let Some(at) = stop
                    .iter()
                    .filter(|s| !s.is_empty())
                    .filter_map(|s| text.find(s.as_str()))
                    .min()
                {
                    text.truncate(at);
                    finish = "stop";
                    break;
                }
                logits = self.last_logits(&[i64::from(id)], &mut cache);
            }
            if stop.is_empty() {
                // The text once, at the end, without the end-of-turn token.
                let end = ids.len() - usize::from(finish == "stop");
                text = self.text.decode(&ids[..end]);
            }
            Generated {
                prompt_ids: prompt_ids.to_vec(),
                ids,
                logprobs,
                finish,
                text,
            }
        })
    }

    /// The logits after `tokens`, which extend the cache.
    fn last_logits(&self, tokens: &[i64], cache: &mut KvCache) -> Tensor {
        let input = Tensor::from_slice(tokens)
            .view([1, -1])
            .to_device(self.llama.device);
        let logits = self.llama.forward(&input, cache);
        logits.select(1, -1).squeeze_dim(0)
    }

    /// Answers a chat request.
    pub fn chat(&self, request: &ChatRequest, seed: u64) -> Result<ChatResponse, ModelError> {
        self.answer(request, seed).map(|(r, _)| r)
    }

    /// Answers a chat request, with the tokens read and generated.
    pub fn answer(
        &self,
        request: &ChatRequest,
        seed: u64,
    ) -> Result<(ChatResponse, Generated), ModelError> {
        if request
            .messages
            .iter()
            .flat_map(|m| &m.content)
            .any(|p| !matches!(p, ContentPart::Text(_)))
        {
            return Err(ModelError::BadRequest(format!(
                "model `{}` reads text only: this request has an image",
                self.name
            )));
        }
        let prompt = self
            .text
            .prompt(request)
            .map_err(|e| ModelError::BadRequest(e.to_string()))?;
        let prompt_ids = self
            .text
            .encode(&prompt)
            .map_err(|e| ModelError::BadRequest(e.to_string()))?;
        if prompt_ids.len() as i64 >= self.llama.config.context {
            return Err(ModelError::BadRequest(format!(
                "the prompt is {} tokens; model `{}` reads at most {}",
                prompt_ids.len(),
                self.name,
                self.llama.config.context
            )));
        }
        let sampling = Sampling {
            temperature: request.temperature.unwrap_or(1.0).max(0.0),
            top_p: request.top_p.unwrap_or(1.0).clamp(0.0, 1.0),
            max_tokens: request.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS),
            seed: request.seed.unwrap_or(seed),
        };
        let g = self.generate(&prompt_ids, sampling, &request.stop);
        let tokens = if request.logprobs {
            g.ids
                .iter()
                .zip(&g.logprobs)
                .map(|(id, lp)| GeneratedToken {
                    id: Some(*id),
                    text: self.text.decode(&[*id]),
                    logprob: *lp,
                })
                .collect()
        } else {
            Vec::new()
        };
        let response = ChatResponse {
            content: g.text.clone(),
            tool_calls: Vec::new(),
            finish_reason: g.finish.into(),
            prompt_tokens: g.prompt_ids.len() as u32,
            completion_tokens: g.ids.len() as u32,
            model: self.name.clone(),
            tokens,
        };
        Ok((response, g))
    }

    /// Writes the model as a Hugging Face folder (weights, config,
    /// tokenizer, chat template), which `policy:DIR` reads back.
    pub fn save(&self, dir: &Path) -> Result<(), String> {
        self.llama.save(dir).map_err(|e| e.to_string())?;
        self.text.save(dir).map_err(|e| e.to_string())
    }
}

/// The next token: the most likely at temperature 0, else drawn from the
/// tempered distribution cut to its top-p mass.
fn pick(logp: &[f32], s: Sampling, rng: &mut SplitMix64) -> u32 {
    let argmax = || {
        logp.iter()
            .enumerate()
            .fold((0usize, f32::NEG_INFINITY), |best, (i, v)| {
                if *v > best.1 { (i, *v) } else { best }
            })
            .0 as u32
    };
    if s.temperature <= 0.0 {
        return argmax();
    }
    let t = f64::from(s.temperature);
    let max = logp.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let mut p: Vec<(usize, f64)> = logp
        .iter()
        .enumerate()
        .map(|(i, v)| (i, ((f64::from(*v) - max) / t).exp()))
        .filter(|(_, w)| *w > 0.0)
        .collect();
    if p.is_empty() {
        return argmax();
    }
    if s.top_p < 1.0 {
        // Only a nucleus needs the order (sorting the vocabulary for every
        // token is most of the sampling's cost).
        p.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let total: f64 = p.iter().map(|x| x.1).sum();
        let mut mass = 0.0;
        let keep = p
            .iter()
            .position(|x| {
                mass += x.1 / total;
                mass >= f64::from(s.top_p)
            })
            .map_or(p.len(), |i| i + 1);
        p.truncate(keep.max(1));
    }
    let total: f64 = p.iter().map(|x| x.1).sum();
    let mut r = rng.next_f64() * total;
    for (i, w) in &p {
        if r < *w {
            return *i as u32;
        }
        r -= w;
    }
    p[p.len() - 1].0 as u32
}

/// The run's `policy:` endpoints, as a [`ModelClient`]. One model answers
/// one call at a time.
pub struct PolicyModels {
    models: HashMap<String, Arc<Mutex<PolicyModel>>>,
    described: serde_json::Value,
}

impl std::fmt::Debug for PolicyModels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyModels")
            .field("endpoints", &self.described)
            .finish()
    }
}

impl PolicyModels {
    /// Opens `(name, path)` pairs on `device`.
    pub fn open(
        endpoints: &[(String, PathBuf)],
        device: Device,
    ) -> Result<PolicyModels, OpenError> {
        let mut models = HashMap::new();
        let mut described = Vec::new();
        for (name, path) in endpoints {
            let m = PolicyModel::open(path, device)?;
            described.push(serde_json::json!({"name": name, "url": format!("policy:{}", path.display()), "model": m.name}));
            models.insert(name.clone(), Arc::new(Mutex::new(m)));
        }
        Ok(PolicyModels {
            models,
            described: described.into(),
        })
    }
}

impl ModelClient for PolicyModels {
    fn has_endpoint(&self, name: &str) -> bool {
        self.models.contains_key(name)
    }

    fn chat(&self, request: &ChatRequest, _images: &Observation, seed: u64) -> LiveAnswer {
        let started = Instant::now();
        let result = match self.models.get(&request.endpoint) {
            None => Err(ModelError::UnknownEndpoint(format!(
                "no model endpoint `{}`",
                request.endpoint
            ))),
            Some(m) => match m.lock() {
                Ok(m) => m.chat(request, seed),
                Err(_) => Err(ModelError::Unavailable(
                    "the model failed in an earlier call".into(),
                )),
            },
        };
        LiveAnswer {
            result,
            attempts: Vec::new(),
            latency_ms: started.elapsed().as_secs_f64() * 1e3,
        }
    }

    fn prices(&self, _endpoint: &str) -> (f64, f64) {
        (0.0, 0.0)
    }

    fn describe(&self) -> serde_json::Value {
        self.described.clone()
    }
}
