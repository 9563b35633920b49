//! The built-in model backend: `--model [NAME=]policy:PATH` answers the
//! plugins' model calls in this process, with no server, from a GGUF file
//! or a Hugging Face folder.

use std::path::{Path, PathBuf};

use ludus_arena::chat::{ChatRequest, ChatResponse, ContentPart, GeneratedToken, ModelError};
use ludus_core::SplitMix64;
use tch::{Device, Kind, Tensor};

use super::decoder::{KvCache, Llama, LoadError};
use super::gguf::Gguf;
use super::schema::Schema;
use super::text::ModelText;
use crate::config::Dtype;

/// Completion tokens when a request gives no `max-tokens`.
const DEFAULT_MAX_TOKENS: u32 = 256;

/// A language model and its text side.
pub struct PolicyModel {
    pub name: String,
    pub llama: Llama,
    pub text: ModelText,
    /// Rows of every decoding step (see [`Llama::decode_step`]): up to this
    /// many sequences generate together, and a sequence's tokens do not
    /// depend on which others share its steps.
    pub batch: usize,
}

/// Sequences decoded together when `policy:PATH` gives no `batch=`.
pub const DEFAULT_BATCH: usize = 8;

/// Sequences decoded together at most.
pub const MAX_BATCH: usize = 256;

/// One sequence being generated.
pub(super) struct Seq {
    prompt_ids: Vec<u32>,
    sampling: Sampling,
    stop: Vec<String>,
    cache: KvCache,
    rng: SplitMix64,
    /// The next token's logits, `[vocab]`.
    logits: Tensor,
    /// Tokens it may generate.
    limit: u32,
    ids: Vec<u32>,
    logprobs: Vec<f32>,
    /// The text so far, kept while stop strings are looked for or a
    /// schema constrains it.
    text: String,
    /// The request's response format, which every token must keep to.
    schema: Option<Schema>,
    pub(super) finish: Option<&'static str>,
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
    /// [`PolicyModel::open`] with the weights in `dtype`. A bf16 model is
    /// read and converted in CPU memory, then moved: the device never holds
    /// its `f32` weights. With `adapters_apart` (serving), a LoRA
    /// checkpoint opened in bf16 keeps its adapters apart from the weights
    /// ([`Llama::unmerge_lora`]), as it was trained; training opens the
    /// merged weights.
    pub fn open_as(
        path: &Path,
        device: Device,
        dtype: Dtype,
        adapters_apart: bool,
    ) -> Result<PolicyModel, OpenError> {
        let kind = match dtype {
            Dtype::F32 => return PolicyModel::open(path, device),
            Dtype::Bf16 => Kind::BFloat16,
        };
        let mut m = PolicyModel::open(path, Device::Cpu)?;
        if adapters_apart {
            m.llama.unmerge_lora(path).map_err(|e| OpenError::Open {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        }
        m.llama.to_kind(kind);
        if device != Device::Cpu {
            m.llama = m.llama.moved_to(device);
        }
        Ok(m)
    }

    /// The files [`PolicyModel::open_as`] reads from `path`, by name: the
    /// GGUF file, or the folder's configuration, tokenizer, weights and
    /// LoRA adapters (not a checkpoint's optimizer state). What a model
    /// must take with it to another machine.
    pub fn files(path: &Path) -> Result<Vec<(String, PathBuf)>, OpenError> {
        let fail = |message: String| OpenError::Open {
            path: path.to_path_buf(),
            message,
        };
        if !path.is_dir() {
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .ok_or_else(|| fail("not a file name".into()))?;
            return Ok(vec![(name.to_string(), path.to_path_buf())]);
        }
        const NEEDED: [&str; 4] = [
            "config.json",
            "tokenizer.json",
            "tokenizer_config.json",
            "adapter_config.json",
        ];
        let mut out = Vec::new();
        for entry in std::fs::read_dir(path)
            .map_err(|e| fail(e.to_string()))?
            .flatten()
        {
            let Some(name) = entry.file_name().to_str().map(String::from) else {
                continue;
            };
            let wanted = NEEDED.contains(&name.as_str())
                || name == "adapter_model.safetensors"
                || super::decoder::is_weights_file(&name);
            if wanted && entry.path().is_file() {
                out.push((name, entry.path()));
            }
        }
        out.sort();
        Ok(out)
    }

    /// A GGUF file, or a folder with `config.json`, `model*.safetensors` and
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
            return Ok(PolicyModel {
                name,
                llama,
                text,
                batch: DEFAULT_BATCH,
            });
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
        Ok(PolicyModel {
            name,
            llama,
            text,
            batch: DEFAULT_BATCH,
        })
    }

    /// Generates from `prompt_ids` until an end-of-turn token, a stop
    /// string or `max_tokens`, keeping to `schema` when there is one (the
    /// batched path, with one sequence).
    pub fn generate(
        &self,
        prompt_ids: &[u32],
        sampling: Sampling,
        stop: &[String],
        schema: Option<Schema>,
    ) -> Generated {
        let mut seqs = vec![self.start(prompt_ids.to_vec(), sampling, stop.to_vec(), schema)];
        loop {
            self.advance(&mut seqs);
            if let Some(done) = seqs.pop_if(|s| s.finish.is_some()) {
                return self.finished(done);
            }
        }
    }

    /// A sequence ready to generate: its prompt read into a fresh cache.
    pub(super) fn start(
        &self,
        prompt_ids: Vec<u32>,
        sampling: Sampling,
        stop: Vec<String>,
        schema: Option<Schema>,
    ) -> Seq {
        tch::no_grad(|| {
            let mut cache = KvCache::default();
            let input: Vec<i64> = prompt_ids.iter().map(|i| i64::from(*i)).collect();
            let input = Tensor::from_slice(&input)
                .view([1, -1])
                .to_device(self.llama.device);
            let logits = self
                .llama
                .forward(&input, &mut cache)
                .select(1, -1)
                .squeeze_dim(0);
            let room = (self.llama.config.context - prompt_ids.len() as i64).max(0) as u32;
            Seq {
                limit: sampling.max_tokens.min(room),
                rng: SplitMix64::new(sampling.seed),
                prompt_ids,
                sampling,
                stop,
                cache,
                logits,
                ids: Vec::new(),
                logprobs: Vec::new(),
                text: String::new(),
                schema,
                finish: if sampling.max_tokens.min(room) == 0 {
                    Some("length")
                } else {
                    None
                },
            }
        })
    }

    /// One token for each unfinished sequence: picked from its logits, then
    /// (unless it ended the sequence) read by one decoding step shared by
    /// all of them.
    pub(super) fn advance(&self, seqs: &mut [Seq]) {
        tch::no_grad(|| {
            let mut going = Vec::new();
            for (i, s) in seqs.iter_mut().enumerate() {
                if s.finish.is_some() {
                    continue;
                }
                let logp = s.logits.log_softmax(-1, Kind::Float);
                let logp: Vec<f32> =
                    Vec::try_from(&logp.to_device(Device::Cpu)).unwrap_or_default();
                let id = match &s.schema {
                    None => pick(&logp, s.sampling, &mut s.rng),
                    Some(schema) => {
                        let pieces = self.text.pieces();
                        let stops = &self.text.stop_ids;
                        let text = &s.text;
                        let allowed = |id: u32| {
                            if stops.contains(&id) {
                                return schema.accepts(text);
                            }
                            pieces.get(id as usize).is_some_and(|p| {
                                !p.is_empty()
                                    && !p.contains('\u{FFFD}')
                                    && schema.admits_prefix(&format!("{text}{p}"))
                            })
                        };
                        // No token fits (the vocabulary cannot write what
                        // the schema needs): the turn ends.
                        pick_allowed(&logp, s.sampling, &mut s.rng, &allowed)
                            .or_else(|| stops.first().copied())
                            .unwrap_or_else(|| pick(&logp, s.sampling, &mut s.rng))
                    }
                };
                // An end-of-turn token is generated like any other (training
                // credits the choice to stop), but is not part of the text.
                s.ids.push(id);
                s.logprobs
                    .push(logp.get(id as usize).copied().unwrap_or(f32::NEG_INFINITY));
                if self.text.stop_ids.contains(&id) {
                    s.finish = Some("stop");
                    continue;
                }
                if s.schema.is_some() {
                    s.text.push_str(
                        self.text
                            .pieces()
                            .get(id as usize)
                            .map_or("", String::as_str),
                    );
                }
                if !s.stop.is_empty() {
                    // Stop strings are looked for in the text so far.
                    s.text = self.text.decode(&s.ids);
                    if let Some(at) = s
                        .stop
                        .iter()
                        .filter(|x| !x.is_empty())
                        .filter_map(|x| s.text.find(x.as_str()))
                        .min()
                    {
                        s.text.truncate(at);
                        s.finish = Some("stop");
                        continue;
                    }
                }
                if s.ids.len() as u32 >= s.limit {
                    s.finish = Some("length");
                    continue;
                }
                going.push(i);
            }
            if going.is_empty() {
                return;
            }
            let tokens: Vec<i64> = going
                .iter()
                .map(|i| i64::from(seqs[*i].ids.last().copied().unwrap_or(0)))
                .collect();
            let mut caches: Vec<KvCache> = going
                .iter()
                .map(|i| std::mem::take(&mut seqs[*i].cache))
                .collect();
            let logits = self.llama.decode_step(&tokens, &mut caches, self.batch);
            for (row, (i, cache)) in going.iter().zip(caches).enumerate() {
                seqs[*i].cache = cache;
                seqs[*i].logits = logits.get(row as i64);
            }
        })
    }

    /// What a finished sequence generated.
    pub(super) fn finished(&self, s: Seq) -> Generated {
        let finish = s.finish.unwrap_or("length");
        let text = if s.stop.is_empty() {
            // The text once, at the end, without the end-of-turn token.
            let end = s.ids.len() - usize::from(finish == "stop");
            self.text.decode(&s.ids[..end])
        } else {
            s.text
        };
        Generated {
            prompt_ids: s.prompt_ids,
            ids: s.ids,
            logprobs: s.logprobs,
            finish,
            text,
        }
    }

    /// Answers a chat request (the batched path, with one sequence).
    pub fn chat(&self, request: &ChatRequest, seed: u64) -> Result<ChatResponse, ModelError> {
        self.answer(request, seed).map(|(r, _)| r)
    }

    /// Answers a chat request, with the tokens read and generated.
    pub fn answer(
        &self,
        request: &ChatRequest,
        seed: u64,
    ) -> Result<(ChatResponse, Generated), ModelError> {
        let (prompt_ids, sampling, schema) = self.prepare(request, seed)?;
        let g = self.generate(&prompt_ids, sampling, &request.stop, schema);
        Ok((self.respond(request, &g), g))
    }

    /// A request's prompt tokens and sampling, or why it cannot be answered.
    pub(super) fn prepare(
        &self,
        request: &ChatRequest,
        seed: u64,
    ) -> Result<(Vec<u32>, Sampling, Option<Schema>), ModelError> {
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
        let schema = match &request.response_format {
            None => None,
            Some(text) => {
                Some(Schema::parse(text).map_err(|e| ModelError::BadRequest(e.to_string()))?)
            }
        };
        Ok((prompt_ids, sampling, schema))
    }

    /// The answer to `request` from what was generated.
    pub(super) fn respond(&self, request: &ChatRequest, g: &Generated) -> ChatResponse {
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
        let (content, tool_calls) = super::text::tool_calls(&g.text, &request.tools);
        ChatResponse {
            content,
            finish_reason: if tool_calls.is_empty() {
                g.finish.into()
            } else {
                "tool_calls".into()
            },
            tool_calls,
            prompt_tokens: g.prompt_ids.len() as u32,
            completion_tokens: g.ids.len() as u32,
            model: self.name.clone(),
            tokens,
        }
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
    if s.temperature <= 0.0 {
        return argmax(logp, |_| true).unwrap_or(0);
    }
    let p = weights(logp, s);
    if p.is_empty() {
        return argmax(logp, |_| true).unwrap_or(0);
    }
    let total: f64 = p.iter().map(|x| x.1).sum();
    draw(&p, total, rng)
}

/// The next token among those `allowed` says yes to, chosen as [`pick`]
/// would from the distribution without the others (`None`: no token is
/// allowed). Candidates are tried most likely first (greedy) or as drawn
/// (sampled, a refused one taken out before the next draw), and after a
/// few refusals every token is asked.
fn pick_allowed(
    logp: &[f32],
    s: Sampling,
    rng: &mut SplitMix64,
    allowed: &dyn Fn(u32) -> bool,
) -> Option<u32> {
    const TRIES: usize = 16;
    let mut refused = std::collections::HashSet::new();
    if s.temperature <= 0.0 {
        for _ in 0..TRIES {
            let id = argmax(logp, |i| !refused.contains(&i))?;
            if allowed(id) {
                return Some(id);
            }
            refused.insert(id);
        }
        return argmax(logp, |i| !refused.contains(&i) && allowed(i));
    }
    let mut p = weights(logp, s);
    let mut total: f64 = p.iter().map(|x| x.1).sum();
    for _ in 0..TRIES {
        if total <= 0.0 {
            break;
        }
        let id = draw(&p, total, rng);
        if allowed(id) {
            return Some(id);
        }
        if let Some(x) = p.iter_mut().find(|x| x.0 as u32 == id) {
            total -= x.1;
            x.1 = 0.0;
        }
    }
    p.retain(|x| x.1 > 0.0 && allowed(x.0 as u32));
    if p.is_empty() {
        // Nothing in the nucleus: the most likely allowed token.
        return argmax(logp, allowed);
    }
    let total: f64 = p.iter().map(|x| x.1).sum();
    Some(draw(&p, total, rng))
}

/// The most likely token that `ok` keeps.
fn argmax(logp: &[f32], ok: impl Fn(u32) -> bool) -> Option<u32> {
    logp.iter()
        .enumerate()
        .filter(|(i, _)| ok(*i as u32))
        .fold(None, |best: Option<(usize, f32)>, (i, v)| match best {
            Some((_, b)) if *v <= b => best,
            _ => Some((i, *v)),
        })
        .map(|(i, _)| i as u32)
}

/// Each token's weight at the temperature, cut to the top-p nucleus.
fn weights(logp: &[f32], s: Sampling) -> Vec<(usize, f64)> {
    let t = f64::from(s.temperature);
    let max = logp.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let mut p: Vec<(usize, f64)> = logp
        .iter()
        .enumerate()
        .map(|(i, v)| (i, ((f64::from(*v) - max) / t).exp()))
        .filter(|(_, w)| *w > 0.0)
        .collect();
    if s.top_p < 1.0 && !p.is_empty() {
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
    p
}

/// A token drawn from weights that sum to `total`.
fn draw(p: &[(usize, f64)], total: f64, rng: &mut SplitMix64) -> u32 {
    let mut r = rng.next_f64() * total;
    for (i, w) in p {
        if r < *w {
            return *i as u32;
        }
        r -= w;
    }
    p.iter().rev().find(|x| x.1 > 0.0).map_or(0, |x| x.0 as u32)
}
