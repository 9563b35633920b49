//! A Llama-family decoder in libtorch: RMSNorm, rotary position embeddings,
//! grouped-query attention with a key/value cache, a SwiGLU feed-forward,
//! tied or separate output embeddings. The configurations of SmolLM2,
//! Llama 3 and Qwen2.5 (attention biases) are all this one model.

use std::collections::HashMap;
use std::path::Path;

use tch::{Device, Kind, Tensor};

use super::gguf::{Gguf, GgufError};

/// How rotary embeddings pair a head's dimensions: GGUF files store Q and K
/// permuted for adjacent pairs; Hugging Face weights rotate the two halves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rope {
    Adjacent,
    Halves,
}

#[derive(Clone, Debug, PartialEq)]
pub struct LlamaConfig {
    pub vocab: i64,
    pub dim: i64,
    pub layers: i64,
    pub heads: i64,
    pub kv_heads: i64,
    pub ffn: i64,
    pub eps: f64,
    pub rope_theta: f64,
    pub rope: Rope,
    pub context: i64,
}

impl LlamaConfig {
    pub fn head_dim(&self) -> i64 {
        self.dim / self.heads
    }
}

struct Layer {
    attn_norm: Tensor,
    wq: Tensor,
    wk: Tensor,
    wv: Tensor,
    wo: Tensor,
    bq: Option<Tensor>,
    bk: Option<Tensor>,
    bv: Option<Tensor>,
    ffn_norm: Tensor,
    gate: Tensor,
    up: Tensor,
    down: Tensor,
}

/// The model's weights, on one device.
pub struct Llama {
    pub config: LlamaConfig,
    embed: Tensor,
    layers: Vec<Layer>,
    norm: Tensor,
    /// `None`: tied to the input embeddings.
    head: Option<Tensor>,
    pub device: Device,
}

/// Keys and values of the positions seen so far, per layer:
/// `[batch, kv_heads, positions, head_dim]`.
#[derive(Default)]
pub struct KvCache {
    kv: Vec<(Tensor, Tensor)>,
}

impl KvCache {
    pub fn len(&self) -> i64 {
        self.kv.first().map_or(0, |(k, _)| k.size()[2])
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Why a model could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error("{0}")]
    Bad(String),
}

impl Llama {
    /// The decoder stored in a GGUF file (architecture `llama` or `qwen2`),
    /// dequantized to `f32`.
    pub fn from_gguf(g: &Gguf, device: Device) -> Result<Llama, LoadError> {
        let arch = g.string("general.architecture")?.to_string();
        if !matches!(arch.as_str(), "llama" | "qwen2") {
            return Err(LoadError::Bad(format!(
                "architecture `{arch}` is not supported (llama and qwen2 are)"
            )));
        }
        let key = |k: &str| format!("{arch}.{k}");
        let embed = tensor(g, "token_embd.weight", device)?;
        let dim = g.int(&key("embedding_length"))?;
        let heads = g.int(&key("attention.head_count"))?;
        let config = LlamaConfig {
            vocab: embed.size()[0],
            dim,
            layers: g.int(&key("block_count"))?,
            heads,
            kv_heads: g.int(&key("attention.head_count_kv")).unwrap_or(heads),
            ffn: g.int(&key("feed_forward_length"))?,
            eps: g.float(&key("attention.layer_norm_rms_epsilon"))?,
            rope_theta: g.float(&key("rope.freq_base")).unwrap_or(10_000.0),
            rope: Rope::Adjacent,
            context: g.int(&key("context_length")).unwrap_or(2048),
        };
        check(&config)?;
        let mut layers = Vec::new();
        for i in 0..config.layers {
            let t = |n: &str| tensor(g, &format!("blk.{i}.{n}"), device);
            let opt = |n: &str| {
                let name = format!("blk.{i}.{n}");
                if g.tensors.contains_key(&name) {
                    tensor(g, &name, device).map(Some)
                } else {
                    Ok(None)
                }
            };
            layers.push(Layer {
                attn_norm: t("attn_norm.weight")?,
                wq: t("attn_q.weight")?,
                wk: t("attn_k.weight")?,
                wv: t("attn_v.weight")?,
                wo: t("attn_output.weight")?,
                bq: opt("attn_q.bias")?,
                bk: opt("attn_k.bias")?,
                bv: opt("attn_v.bias")?,
                ffn_norm: t("ffn_norm.weight")?,
                gate: t("ffn_gate.weight")?,
                up: t("ffn_up.weight")?,
                down: t("ffn_down.weight")?,
            });
        }
        let head = if g.tensors.contains_key("output.weight") {
            Some(tensor(g, "output.weight", device)?)
        } else {
            None
        };
        Llama {
            config,
            embed,
            layers,
            norm: tensor(g, "output_norm.weight", device)?,
            head,
            device,
        }
        .checked()
    }

    /// A model with random weights (normal, standard deviation 0.02; norms
    /// at 1), tied embeddings, from `seed`.
    pub fn random(config: LlamaConfig, seed: u64, device: Device) -> Result<Llama, LoadError> {
        check(&config)?;
        tch::manual_seed(seed as i64);
        let c = &config;
        let w = |rows: i64, cols: i64| Tensor::randn([rows, cols], (Kind::Float, device)) * 0.02;
        let ones = |n: i64| Tensor::ones([n], (Kind::Float, device));
        let kv = c.kv_heads * c.head_dim();
        let layers = (0..c.layers)
            .map(|_| Layer {
                attn_norm: ones(c.dim),
                wq: w(c.dim, c.dim),
                wk: w(kv, c.dim),
                wv: w(kv, c.dim),
                wo: w(c.dim, c.dim),
                bq: None,
                bk: None,
                bv: None,
                ffn_norm: ones(c.dim),
                gate: w(c.ffn, c.dim),
                up: w(c.ffn, c.dim),
                down: w(c.dim, c.ffn),
            })
            .collect();
        Ok(Llama {
            embed: w(c.vocab, c.dim),
            layers,
            norm: ones(c.dim),
            head: None,
            config,
            device,
        })
    }

    /// A Hugging Face folder: `config.json` and `*.safetensors`.
    pub fn from_folder(dir: &Path, device: Device) -> Result<Llama, LoadError> {
        let bad = |m: String| LoadError::Bad(format!("{}: {m}", dir.display()));
        let text = std::fs::read_to_string(dir.join("config.json"))
            .map_err(|e| bad(format!("config.json: {e}")))?;
        let c: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| bad(format!("config.json: {e}")))?;
        let int = |k: &str| {
            c[k].as_i64()
                .ok_or_else(|| bad(format!("config.json has no `{k}`")))
        };
        let heads = int("num_attention_heads")?;
        let config = LlamaConfig {
            vocab: int("vocab_size")?,
            dim: int("hidden_size")?,
            layers: int("num_hidden_layers")?,
            heads,
            kv_heads: c["num_key_value_heads"].as_i64().unwrap_or(heads),
            ffn: int("intermediate_size")?,
            eps: c["rms_norm_eps"].as_f64().unwrap_or(1e-5),
            rope_theta: c["rope_theta"].as_f64().unwrap_or(10_000.0),
            rope: if c["ludus_rope"] == "adjacent" {
                Rope::Adjacent
            } else {
                Rope::Halves
            },
            context: c["max_position_embeddings"].as_i64().unwrap_or(2048),
        };
        check(&config)?;
        let mut weights: HashMap<String, Tensor> = HashMap::new();
        let entries = std::fs::read_dir(dir).map_err(|e| bad(e.to_string()))?;
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "safetensors") {
                let read = Tensor::read_safetensors(&path)
                    .map_err(|e| bad(format!("{}: {e}", path.display())))?;
                for (name, t) in read {
                    weights.insert(name, t.to_kind(Kind::Float).to_device(device));
                }
            }
        }
        let mut take = |n: &str| {
            weights
                .remove(n)
                .ok_or_else(|| bad(format!("no tensor `{n}` in its safetensors files")))
        };
        let embed = take("model.embed_tokens.weight")?;
        let mut layers = Vec::new();
        for i in 0..config.layers {
            let p = format!("model.layers.{i}");
            layers.push(Layer {
                attn_norm: take(&format!("{p}.input_layernorm.weight"))?,
                wq: take(&format!("{p}.self_attn.q_proj.weight"))?,
                wk: take(&format!("{p}.self_attn.k_proj.weight"))?,
                wv: take(&format!("{p}.self_attn.v_proj.weight"))?,
                wo: take(&format!("{p}.self_attn.o_proj.weight"))?,
                bq: take(&format!("{p}.self_attn.q_proj.bias")).ok(),
                bk: take(&format!("{p}.self_attn.k_proj.bias")).ok(),
                bv: take(&format!("{p}.self_attn.v_proj.bias")).ok(),
                ffn_norm: take(&format!("{p}.post_attention_layernorm.weight"))?,
                gate: take(&format!("{p}.mlp.gate_proj.weight"))?,
                up: take(&format!("{p}.mlp.up_proj.weight"))?,
                down: take(&format!("{p}.mlp.down_proj.weight"))?,
            });
        }
        let norm = take("model.norm.weight")?;
        let head = take("lm_head.weight").ok();
        Llama {
            config,
            embed,
            layers,
            norm,
            head,
            device,
        }
        .checked()
    }

    /// Every weight, in a fixed order, sharing storage with the model (an
    /// optimizer stepping them changes the model).
    pub fn params(&self) -> Vec<Tensor> {
        self.named().into_iter().map(|(_, t)| t).collect()
    }

    /// Every weight under its Hugging Face name.
    pub fn named(&self) -> Vec<(String, Tensor)> {
        let mut out = vec![(
            "model.embed_tokens.weight".to_string(),
            self.embed.shallow_clone(),
        )];
        for (i, l) in self.layers.iter().enumerate() {
            let p = format!("model.layers.{i}");
            let mut put = |n: &str, t: &Tensor| out.push((format!("{p}.{n}"), t.shallow_clone()));
            put("input_layernorm.weight", &l.attn_norm);
            put("self_attn.q_proj.weight", &l.wq);
            put("self_attn.k_proj.weight", &l.wk);
            put("self_attn.v_proj.weight", &l.wv);
            put("self_attn.o_proj.weight", &l.wo);
            for (n, b) in [("q", &l.bq), ("k", &l.bk), ("v", &l.bv)] {
                if let Some(b) = b {
                    put(&format!("self_attn.{n}_proj.bias"), b);
                }
            }
            put("post_attention_layernorm.weight", &l.ffn_norm);
            put("mlp.gate_proj.weight", &l.gate);
            put("mlp.up_proj.weight", &l.up);
            put("mlp.down_proj.weight", &l.down);
        }
        out.push(("model.norm.weight".into(), self.norm.shallow_clone()));
        if let Some(h) = &self.head {
            out.push(("lm_head.weight".into(), h.shallow_clone()));
        }
        out
    }

    /// Makes the weights trainable (their gradients are kept) or not.
    pub fn set_trainable(&mut self, on: bool) {
        // Loaded weights carry no history (GGUF ones are views of their
        // dequantized buffers, which cannot be detached in place).
        for mut t in self.params() {
            let _ = t.requires_grad_(on);
        }
    }

    /// Writes the model as a Hugging Face folder's `config.json` and
    /// `model.safetensors` (with the rotary pairing it was loaded with, so
    /// [`Llama::from_folder`] reads it back exactly).
    pub fn save(&self, dir: &Path) -> Result<(), LoadError> {
        let bad = |m: String| LoadError::Bad(format!("{}: {m}", dir.display()));
        std::fs::create_dir_all(dir).map_err(|e| bad(e.to_string()))?;
        let c = &self.config;
        let config = serde_json::json!({
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "vocab_size": c.vocab,
            "hidden_size": c.dim,
            "num_hidden_layers": c.layers,
            "num_attention_heads": c.heads,
            "num_key_value_heads": c.kv_heads,
            "intermediate_size": c.ffn,
            "rms_norm_eps": c.eps,
            "rope_theta": c.rope_theta,
            "max_position_embeddings": c.context,
            "tie_word_embeddings": self.head.is_none(),
            "ludus_rope": match c.rope { Rope::Adjacent => "adjacent", Rope::Halves => "halves" },
        });
        std::fs::write(dir.join("config.json"), config.to_string())
            .map_err(|e| bad(e.to_string()))?;
        let named: Vec<(String, Tensor)> = self
            .named()
            .into_iter()
            .map(|(n, t)| (n, t.detach().to_device(Device::Cpu)))
            .collect();
        Tensor::write_safetensors(&named, dir.join("model.safetensors"))
            .map_err(|e| bad(e.to_string()))
    }

    /// The log-probability of each of `generated` after `prompt` and the
    /// generated tokens before it: `[generated]`, with gradients when the
    /// weights are trainable.
    pub fn logprobs_of(&self, prompt: &[u32], generated: &[u32]) -> Tensor {
        let all: Vec<i64> = prompt
            .iter()
            .chain(generated)
            .map(|i| i64::from(*i))
            .collect();
        let n = generated.len() as i64;
        let input = Tensor::from_slice(&all[..all.len() - 1])
            .view([1, -1])
            .to_device(self.device);
        let logits = self.forward(&input, &mut KvCache::default()).squeeze_dim(0);
        let logp = logits
            .narrow(0, prompt.len() as i64 - 1, n)
            .log_softmax(-1, Kind::Float);
        let targets: Vec<i64> = generated.iter().map(|i| i64::from(*i)).collect();
        let targets = Tensor::from_slice(&targets)
            .to_device(self.device)
            .unsqueeze(1);
        logp.gather(1, &targets, false).squeeze_dim(1)
    }

    /// Logits `[batch, tokens, vocab]` for `tokens` (`[batch, tokens]`,
    /// int64) following the positions in `cache`, which it extends.
    pub fn forward(&self, tokens: &Tensor, cache: &mut KvCache) -> Tensor {
        let c = &self.config;
        let (b, t) = (tokens.size()[0], tokens.size()[1]);
        let past = cache.len();
        let hd = c.head_dim();
        let (cos, sin) = rope_tables(c, past, t, self.device);
        let mut x = self
            .embed
            .index_select(0, &tokens.flatten(0, -1))
            .view([b, t, c.dim]);
        // Query t (at position past + t) sees keys up to that position.
        let mask = Tensor::ones([t, past + t], (Kind::Bool, self.device)).triu(past + 1);
        let scale = 1.0 / (hd as f64).sqrt();
        let fresh = cache.kv.is_empty();
        for (i, layer) in self.layers.iter().enumerate() {
            let h = rms_norm(&x, &layer.attn_norm, c.eps);
            let q = h
                .linear(&layer.wq, layer.bq.as_ref())
                .view([b, t, c.heads, hd]);
            let k = h
                .linear(&layer.wk, layer.bk.as_ref())
                .view([b, t, c.kv_heads, hd]);
            let v = h
                .linear(&layer.wv, layer.bv.as_ref())
                .view([b, t, c.kv_heads, hd]);
            let q = rotate(&q, &cos, &sin, c.rope).transpose(1, 2);
            let k = rotate(&k, &cos, &sin, c.rope).transpose(1, 2);
            let v = v.transpose(1, 2);
            let (k, v) = if fresh {
                cache.kv.push((k.shallow_clone(), v.shallow_clone()));
                (k, v)
            } else {
                let (pk, pv) = &cache.kv[i];
                let k = Tensor::cat(&[pk, &k], 2);
                let v = Tensor::cat(&[pv, &v], 2);
                cache.kv[i] = (k.shallow_clone(), v.shallow_clone());
                (k, v)
            };
            let groups = c.heads / c.kv_heads;
            let (k, v) = if groups > 1 {
                (
                    k.repeat_interleave_self_int(groups, 1, None::<i64>),
                    v.repeat_interleave_self_int(groups, 1, None::<i64>),
                )
            } else {
                (k, v)
            };
            let scores = q.matmul(&k.transpose(-2, -1)) * scale;
            let scores = scores.masked_fill(&mask, f64::NEG_INFINITY);
            let attn = scores.softmax(-1, Kind::Float).matmul(&v);
            let attn = attn.transpose(1, 2).contiguous().view([b, t, c.dim]);
            // Out of place: autograd keeps `x` for the norm's backward pass.
            x = &x + attn.linear(&layer.wo, None::<&Tensor>);
            let h = rms_norm(&x, &layer.ffn_norm, c.eps);
            let ff = h.linear(&layer.gate, None::<&Tensor>).silu()
                * h.linear(&layer.up, None::<&Tensor>);
            x = &x + ff.linear(&layer.down, None::<&Tensor>);
        }
        let x = rms_norm(&x, &self.norm, c.eps);
        x.linear(self.head.as_ref().unwrap_or(&self.embed), None::<&Tensor>)
    }
}

impl Llama {
    /// Every weight has the shape the configuration implies: a file whose
    /// tensors disagree with its own config is refused here, not met as a
    /// libtorch error in the middle of a call.
    fn checked(self) -> Result<Llama, LoadError> {
        let c = &self.config;
        let kv = c.kv_heads * c.head_dim();
        let want = |name: &str, t: &Tensor, shape: &[i64]| -> Result<(), LoadError> {
            if t.size() == shape {
                Ok(())
            } else {
                Err(LoadError::Bad(format!(
                    "tensor {name} is {:?}, the model's config needs {shape:?}",
                    t.size()
                )))
            }
        };
        want("token embeddings", &self.embed, &[c.vocab, c.dim])?;
        want("output norm", &self.norm, &[c.dim])?;
        if let Some(h) = &self.head {
            want("output", h, &[c.vocab, c.dim])?;
        }
        for (i, l) in self.layers.iter().enumerate() {
            let n = |w: &str| format!("{w} of layer {i}");
            want(&n("attention norm"), &l.attn_norm, &[c.dim])?;
            want(&n("query"), &l.wq, &[c.dim, c.dim])?;
            want(&n("key"), &l.wk, &[kv, c.dim])?;
            want(&n("value"), &l.wv, &[kv, c.dim])?;
            want(&n("attention output"), &l.wo, &[c.dim, c.dim])?;
            for (w, b, len) in [
                ("query bias", &l.bq, c.dim),
                ("key bias", &l.bk, kv),
                ("value bias", &l.bv, kv),
            ] {
                if let Some(b) = b {
                    want(&n(w), b, &[len])?;
                }
            }
            want(&n("feed-forward norm"), &l.ffn_norm, &[c.dim])?;
            want(&n("gate"), &l.gate, &[c.ffn, c.dim])?;
            want(&n("up"), &l.up, &[c.ffn, c.dim])?;
            want(&n("down"), &l.down, &[c.dim, c.ffn])?;
        }
        Ok(self)
    }
}

fn check(c: &LlamaConfig) -> Result<(), LoadError> {
    let ok = c.heads > 0
        && c.kv_heads > 0
        && c.dim > 0
        && c.dim % c.heads == 0
        && c.heads % c.kv_heads == 0
        && (c.dim / c.heads) % 2 == 0
        && c.layers > 0
        && c.layers <= 1024;
    if ok {
        Ok(())
    } else {
        Err(LoadError::Bad(format!(
            "inconsistent model shape: {} dimensions, {} heads, {} key/value heads, {} layers",
            c.dim, c.heads, c.kv_heads, c.layers
        )))
    }
}

fn tensor(g: &Gguf, name: &str, device: Device) -> Result<Tensor, LoadError> {
    let (values, shape) = g.tensor(name)?;
    Ok(Tensor::from_slice(&values)
        .view(shape.as_slice())
        .to_device(device))
}

fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Tensor {
    let var = x.pow_tensor_scalar(2).mean_dim(-1, true, Kind::Float);
    x * (var + eps).rsqrt() * w
}

/// `cos` and `sin` of each position's angles, `[tokens, head_dim / 2]`.
fn rope_tables(c: &LlamaConfig, past: i64, t: i64, device: Device) -> (Tensor, Tensor) {
    let half = c.head_dim() / 2;
    let inv: Vec<f32> = (0..half)
        .map(|i| (c.rope_theta.powf(-(2 * i) as f64 / c.head_dim() as f64)) as f32)
        .collect();
    let inv = Tensor::from_slice(&inv).to_device(device);
    let pos = Tensor::arange_start(past, past + t, (Kind::Float, device));
    let angles = pos.unsqueeze(1) * inv.unsqueeze(0);
    (angles.cos(), angles.sin())
}

/// Rotates `x` (`[batch, tokens, heads, head_dim]`) by the angles.
fn rotate(x: &Tensor, cos: &Tensor, sin: &Tensor, rope: Rope) -> Tensor {
    let size = x.size();
    let (cos, sin) = (cos.unsqueeze(0).unsqueeze(2), sin.unsqueeze(0).unsqueeze(2));
    match rope {
        Rope::Adjacent => {
            let pairs = x.view([size[0], size[1], size[2], size[3] / 2, 2]);
            let (a, b) = (pairs.select(-1, 0), pairs.select(-1, 1));
            let ra = &a * &cos - &b * &sin;
            let rb = &a * &sin + &b * &cos;
            Tensor::stack(&[ra, rb], -1).view(size.as_slice())
        }
        Rope::Halves => {
            let half = size[3] / 2;
            let (a, b) = (x.narrow(-1, 0, half), x.narrow(-1, half, half));
            let ra = &a * &cos - &b * &sin;
            let rb = &b * &cos + &a * &sin;
            Tensor::cat(&[ra, rb], -1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A folder whose tensors disagree with its config is refused at load.
    #[test]
    fn weights_that_disagree_with_the_config_are_refused() {
        let config = LlamaConfig {
            vocab: 12,
            dim: 8,
            layers: 1,
            heads: 2,
            kv_heads: 1,
            ffn: 16,
            eps: 1e-5,
            rope_theta: 10_000.0,
            rope: Rope::Halves,
            context: 32,
        };
        let dir = std::env::temp_dir().join(format!("ludus-llama-shapes-{}", std::process::id()));
        let model = Llama::random(config.clone(), 1, Device::Cpu).expect("random");
        model.save(&dir).expect("save");
        assert!(Llama::from_folder(&dir, Device::Cpu).is_ok());
        // The same weights under a config that says 16 wide.
        let text = std::fs::read_to_string(dir.join("config.json")).expect("config");
        let text = text.replace("\"hidden_size\":8", "\"hidden_size\":16");
        std::fs::write(dir.join("config.json"), text).expect("write");
        let err = Llama::from_folder(&dir, Device::Cpu)
            .err()
            .expect("refused")
            .to_string();
        assert!(
            err.contains("token embeddings") && err.contains("[12, 16]"),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
