//! Tiny language models with random weights and a word-level vocabulary,
//! written as Hugging Face folders: small enough to train on a CPU in
//! minutes, for tests and for trying a training setup before spending a
//! GPU on it.

use std::path::Path;

use tokenizers::models::wordlevel::WordLevel;
use tokenizers::pre_tokenizers::whitespace::WhitespaceSplit;
use tokenizers::{AddedToken, Tokenizer};

use super::decoder::{Llama, LlamaConfig, LoadError, Rope};

/// The template of tiny models: `ROLE TEXT ... assistant`.
const TEMPLATE: &str = "{% for m in messages %}{{ m['role'] }} {{ m['content'] }} {% endfor %}{% if add_generation_prompt %}assistant{% endif %}";

/// A tiny model's shape and words.
#[derive(Clone, Debug)]
pub struct TinySpec {
    /// The words it knows besides `<unk>`, `<end>` and the role names;
    /// anything else reads as `<unk>`.
    pub words: Vec<String>,
    pub dim: i64,
    pub layers: i64,
    pub heads: i64,
    pub seed: u64,
}

/// Writes a tiny model to `dir`: `config.json`, `model.safetensors`,
/// `tokenizer.json` (whitespace-separated words) and
/// `tokenizer_config.json` (its chat template and end token).
pub fn write(dir: &Path, spec: &TinySpec) -> Result<(), LoadError> {
    let bad = |m: String| LoadError::Bad(format!("{}: {m}", dir.display()));
    let mut vocab: Vec<String> = ["<unk>", "<end>", "system", "user", "assistant", "tool"]
        .map(String::from)
        .to_vec();
    for w in &spec.words {
        if !vocab.contains(w) {
            vocab.push(w.clone());
        }
    }
    let model = WordLevel::builder()
        .vocab(
            vocab
                .iter()
                .enumerate()
                .map(|(i, w)| (w.clone(), i as u32))
                .collect(),
        )
        .unk_token("<unk>".into())
        .build()
        .map_err(|e| bad(e.to_string()))?;
    let mut tokenizer = Tokenizer::new(model);
    tokenizer.with_pre_tokenizer(Some(WhitespaceSplit));
    tokenizer
        .add_special_tokens(vec![AddedToken::from("<end>", true)])
        .map_err(|e| bad(e.to_string()))?;
    std::fs::create_dir_all(dir).map_err(|e| bad(e.to_string()))?;
    tokenizer
        .save(dir.join("tokenizer.json"), false)
        .map_err(|e| bad(e.to_string()))?;
    let config = serde_json::json!({"chat_template": TEMPLATE, "eos_token": "<end>"});
    std::fs::write(dir.join("tokenizer_config.json"), config.to_string())
        .map_err(|e| bad(e.to_string()))?;
    let heads = spec.heads.max(1);
    let llama = Llama::random(
        LlamaConfig {
            vocab: vocab.len() as i64,
            dim: spec.dim,
            layers: spec.layers,
            heads,
            kv_heads: heads,
            ffn: spec.dim * 2,
            eps: 1e-5,
            rope_theta: 10_000.0,
            rope: Rope::Halves,
            context: 256,
        },
        spec.seed,
        tch::Device::Cpu,
    )?;
    llama.save(dir)
}
