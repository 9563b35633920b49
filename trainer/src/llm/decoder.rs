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
    /// Adapters, by [`LORA_TARGETS`] index.
    lora: [Option<Lora>; 7],
}

/// The weights a LoRA adapter can sit on, by their Hugging Face names.
pub const LORA_TARGETS: [&str; 7] = [
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
];
const Q: usize = 0;
const K: usize = 1;
const V: usize = 2;
const O: usize = 3;
const GATE: usize = 4;
const UP: usize = 5;
const DOWN: usize = 6;

/// Whether a Hugging Face folder's file `name` holds the model's weights
/// (`model.safetensors`, or a shard `model-00001-of-00002.safetensors`).
pub fn is_weights_file(name: &str) -> bool {
    name.starts_with("model") && name.ends_with(".safetensors")
}

/// A low-rank adapter on a weight `W` (`[out, in]`): the layer computes
/// `x W^T + scale (x A^T) B^T`, with `A` `[rank, in]` and `B` `[out, rank]`
/// (zero at first, so an added adapter changes nothing until trained).
pub struct Lora {
    a: Tensor,
    b: Tensor,
    scale: f64,
}

impl Lora {
    /// What the adapter adds to its weight, `scale B A`, in `f32` (what
    /// saving merges in and [`Llama::unmerge_lora`] takes out).
    fn change(&self) -> Tensor {
        let f32 = |t: &Tensor| t.to_kind(Kind::Float);
        f32(&self.b).matmul(&f32(&self.a)) * self.scale
    }
}

impl Layer {
    /// Target `t`'s weight and bias.
    fn weight(&self, t: usize) -> (&Tensor, Option<&Tensor>) {
        match t {
            Q => (&self.wq, self.bq.as_ref()),
            K => (&self.wk, self.bk.as_ref()),
            V => (&self.wv, self.bv.as_ref()),
            O => (&self.wo, None),
            GATE => (&self.gate, None),
            UP => (&self.up, None),
            _ => (&self.down, None),
        }
    }

    /// Target `t`'s weight, to replace.
    fn weight_mut(&mut self, t: usize) -> &mut Tensor {
        match t {
            Q => &mut self.wq,
            K => &mut self.wk,
            V => &mut self.wv,
            O => &mut self.wo,
            GATE => &mut self.gate,
            UP => &mut self.up,
            _ => &mut self.down,
        }
    }

    /// `x` through target `t`, with its adapter when it has one.
    fn proj(&self, t: usize, x: &Tensor) -> Tensor {
        let (w, b) = self.weight(t);
        let y = x.linear(w, b);
        match &self.lora[t] {
            Some(l) => {
                y + x
                    .linear(&l.a, None::<&Tensor>)
                    .linear(&l.b, None::<&Tensor>)
                    * l.scale
            }
            None => y,
        }
    }

    /// Target `t`'s weight with its adapter merged in, in `f32`: an
    /// adapter's change is mostly smaller than a bf16 weight's rounding
    /// step, and merging in bf16 would round it away.
    fn merged(&self, t: usize) -> Tensor {
        let (w, _) = self.weight(t);
        match &self.lora[t] {
            Some(l) => tch::no_grad(|| w.to_kind(Kind::Float) + l.change()),
            None => w.shallow_clone(),
        }
    }
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
    /// Appends a layer's new keys and values; returns all of them.
    fn extend(&mut self, layer: usize, k: Tensor, v: Tensor) -> (Tensor, Tensor) {
        if let Some((pk, pv)) = self.kv.get(layer) {
            let k = Tensor::cat(&[pk, &k], 2);
            let v = Tensor::cat(&[pv, &v], 2);
            self.kv[layer] = (k.shallow_clone(), v.shallow_clone());
            (k, v)
        } else {
            self.kv.push((k.shallow_clone(), v.shallow_clone()));
            (k, v)
        }
    }

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
                lora: Default::default(),
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
                lora: Default::default(),
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

    /// A Hugging Face folder: `config.json` and `model*.safetensors`.
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
            // The weights, not the adapters or a checkpoint's optimizer
            // state beside them.
            if path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(is_weights_file)
            {
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
                lora: Default::default(),
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
        self.named_as(false)
    }

    /// Every weight under its Hugging Face name, adapters merged in when
    /// `merge`.
    fn named_as(&self, merge: bool) -> Vec<(String, Tensor)> {
        let mut out = vec![(
            "model.embed_tokens.weight".to_string(),
            self.embed.shallow_clone(),
        )];
        for (i, l) in self.layers.iter().enumerate() {
            let p = format!("model.layers.{i}");
            let w = |t: usize| {
                if merge {
                    l.merged(t)
                } else {
                    l.weight(t).0.shallow_clone()
                }
            };
            let mut put = |n: &str, t: Tensor| out.push((format!("{p}.{n}"), t));
            put("input_layernorm.weight", l.attn_norm.shallow_clone());
            put("self_attn.q_proj.weight", w(Q));
            put("self_attn.k_proj.weight", w(K));
            put("self_attn.v_proj.weight", w(V));
            put("self_attn.o_proj.weight", w(O));
            for (n, b) in [("q", &l.bq), ("k", &l.bk), ("v", &l.bv)] {
                if let Some(b) = b {
                    put(&format!("self_attn.{n}_proj.bias"), b.shallow_clone());
                }
            }
            put(
                "post_attention_layernorm.weight",
                l.ffn_norm.shallow_clone(),
            );
            put("mlp.gate_proj.weight", w(GATE));
            put("mlp.up_proj.weight", w(UP));
            put("mlp.down_proj.weight", w(DOWN));
        }
        out.push(("model.norm.weight".into(), self.norm.shallow_clone()));
        if let Some(h) = &self.head {
            out.push(("lm_head.weight".into(), h.shallow_clone()));
        }
        out
    }

    /// Adds a LoRA adapter of `rank` to each of `targets` (names from
    /// [`LORA_TARGETS`]) in every layer, scaled by `alpha / rank`: `A`
    /// random from `seed`, `B` zero. The adapters are trainable; the
    /// weights are left as they are.
    pub fn add_lora(
        &mut self,
        rank: i64,
        alpha: f64,
        targets: &[String],
        seed: u64,
    ) -> Result<(), LoadError> {
        let mut chosen = Vec::new();
        for t in targets {
            match LORA_TARGETS.iter().position(|n| n == t) {
                Some(i) => chosen.push(i),
                None => {
                    return Err(LoadError::Bad(format!(
                        "unknown LoRA target `{t}` (the targets are {})",
                        LORA_TARGETS.join(", ")
                    )));
                }
            }
        }
        if chosen.is_empty() || rank < 1 {
            return Err(LoadError::Bad(
                "LoRA needs a rank of at least 1 and at least one target".into(),
            ));
        }
        tch::manual_seed(seed as i64);
        let (device, kind) = (self.device, self.kind());
        for layer in &mut self.layers {
            for &t in &chosen {
                let size = layer.weight(t).0.size();
                let (out, inp) = (size[0], size[1]);
                let a = (Tensor::randn([rank, inp], (Kind::Float, device)) / (inp as f64).sqrt())
                    .to_kind(kind)
                    .set_requires_grad(true);
                let b = Tensor::zeros([out, rank], (kind, device)).set_requires_grad(true);
                layer.lora[t] = Some(Lora {
                    a,
                    b,
                    scale: alpha / rank as f64,
                });
            }
        }
        Ok(())
    }

    /// The adapters' tensors under PEFT's names, in a fixed order (empty
    /// without adapters); they share storage with the model.
    pub fn lora_named(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for (i, l) in self.layers.iter().enumerate() {
            for (t, lora) in l.lora.iter().enumerate() {
                if let Some(lora) = lora {
                    let block = if t <= O { "self_attn" } else { "mlp" };
                    let p = format!(
                        "base_model.model.model.layers.{i}.{block}.{}",
                        LORA_TARGETS[t]
                    );
                    out.push((format!("{p}.lora_A.weight"), lora.a.shallow_clone()));
                    out.push((format!("{p}.lora_B.weight"), lora.b.shallow_clone()));
                }
            }
        }
        out
    }

    /// Takes the adapters a LoRA checkpoint's folder `dir` holds
    /// (`adapter_config.json`, `adapter_model.safetensors`) back out of the
    /// weights they were merged into on save, and keeps them apart, frozen:
    /// converted to bf16 then, the model computes as it did in training
    /// (the adapters' output added to the weights', not their change
    /// rounded into bf16 weights). The weights are recovered in `f32`, to
    /// the bf16 values they had. `Ok(false)` when `dir` has no adapters.
    pub fn unmerge_lora(&mut self, dir: &Path) -> Result<bool, LoadError> {
        let config = dir.join("adapter_config.json");
        if !config.is_file() {
            return Ok(false);
        }
        let bad = |m: String| LoadError::Bad(format!("{}: {m}", config.display()));
        let text = std::fs::read_to_string(&config).map_err(|e| bad(e.to_string()))?;
        let c: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        let rank = c["r"].as_i64().ok_or_else(|| bad("no rank `r`".into()))?;
        let alpha = c["lora_alpha"]
            .as_f64()
            .ok_or_else(|| bad("no `lora_alpha`".into()))?;
        let targets: Vec<String> = c["target_modules"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|t| t.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        self.add_lora(rank, alpha, &targets, 0)?;
        self.load_lora(&dir.join("adapter_model.safetensors"))?;
        tch::no_grad(|| {
            for layer in &mut self.layers {
                for t in 0..layer.lora.len() {
                    let Some(change) = layer.lora[t].as_ref().map(Lora::change) else {
                        continue;
                    };
                    let w = layer.weight_mut(t);
                    *w = (w.to_kind(Kind::Float) - change).to_kind(w.kind());
                }
                // Served, not trained.
                for l in layer.lora.iter_mut().flatten() {
                    (l.a, l.b) = (l.a.detach(), l.b.detach());
                }
            }
        });
        Ok(true)
    }

    /// Reads the adapters' values from `path` (as [`Llama::save`] writes
    /// them) into the adapters [`Llama::add_lora`] made.
    pub fn load_lora(&mut self, path: &Path) -> Result<(), LoadError> {
        let bad = |m: String| LoadError::Bad(format!("{}: {m}", path.display()));
        let read: HashMap<String, Tensor> = Tensor::read_safetensors(path)
            .map_err(|e| bad(e.to_string()))?
            .into_iter()
            .collect();
        for (name, mut t) in self.lora_named() {
            let v = read
                .get(&name)
                .ok_or_else(|| bad(format!("no tensor `{name}`")))?;
            if v.size() != t.size() {
                return Err(bad(format!(
                    "`{name}` is {:?}, not {:?}",
                    v.size(),
                    t.size()
                )));
            }
            tch::no_grad(|| t.copy_(v));
        }
        Ok(())
    }

    /// The element type of the weights (`Float`, or `BFloat16` after
    /// [`Llama::to_kind`]).
    pub fn kind(&self) -> Kind {
        self.embed.kind()
    }

    /// Converts every weight (adapters included) to `kind`, keeping which
    /// of them are trainable. Activations follow the weights' type; norms,
    /// softmaxes and log-probabilities are computed in `f32`.
    pub fn to_kind(&mut self, kind: Kind) {
        *self = self.mapped(self.device, |t| t.to_kind(kind));
    }

    /// A copy of the model on `device` (a frozen reference kept in CPU
    /// memory goes to the GPU for a moment with this).
    pub fn moved_to(&self, device: Device) -> Llama {
        self.mapped(device, |t| t.to_device(device))
    }

    /// The model with every tensor `t` replaced by `f(t)`, detached,
    /// trainable where `t` was, on `device`.
    fn mapped(&self, device: Device, f: impl Fn(&Tensor) -> Tensor) -> Llama {
        let g = |t: &Tensor| {
            let new = tch::no_grad(|| f(t)).detach();
            if t.requires_grad() {
                new.set_requires_grad(true)
            } else {
                new
            }
        };
        Llama {
            config: self.config.clone(),
            embed: g(&self.embed),
            layers: self
                .layers
                .iter()
                .map(|l| Layer {
                    attn_norm: g(&l.attn_norm),
                    wq: g(&l.wq),
                    wk: g(&l.wk),
                    wv: g(&l.wv),
                    wo: g(&l.wo),
                    bq: l.bq.as_ref().map(g),
                    bk: l.bk.as_ref().map(g),
                    bv: l.bv.as_ref().map(g),
                    ffn_norm: g(&l.ffn_norm),
                    gate: g(&l.gate),
                    up: g(&l.up),
                    down: g(&l.down),
                    lora: std::array::from_fn(|t| {
                        l.lora[t].as_ref().map(|x| Lora {
                            a: g(&x.a),
                            b: g(&x.b),
                            scale: x.scale,
                        })
                    }),
                })
                .collect(),
            norm: g(&self.norm),
            head: self.head.as_ref().map(g),
            device,
        }
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
        let cpu = |v: Vec<(String, Tensor)>| -> Vec<(String, Tensor)> {
            v.into_iter()
                .map(|(n, t)| (n, t.detach().to_device(Device::Cpu)))
                .collect()
        };
        Tensor::write_safetensors(&cpu(self.named_as(true)), dir.join("model.safetensors"))
            .map_err(|e| bad(e.to_string()))?;
        // Adapters are also kept on their own (a resumed run goes on
        // training them over the unmerged weights).
        let adapters = self.lora_named();
        let first = self
            .layers
            .first()
            .and_then(|l| l.lora.iter().flatten().next());
        if let Some(l) = first {
            let rank = l.a.size()[0];
            let targets: Vec<&str> = self.layers[0]
                .lora
                .iter()
                .zip(LORA_TARGETS)
                .filter_map(|(l, n)| l.as_ref().map(|_| n))
                .collect();
            let config = serde_json::json!({
                "peft_type": "LORA",
                "r": rank,
                "lora_alpha": l.scale * rank as f64,
                "target_modules": targets,
            });
            std::fs::write(dir.join("adapter_config.json"), config.to_string())
                .map_err(|e| bad(e.to_string()))?;
            Tensor::write_safetensors(&cpu(adapters), dir.join("adapter_model.safetensors"))
                .map_err(|e| bad(e.to_string()))?;
        }
        Ok(())
    }

    /// The log-probability of each of `generated` after `prompt` and the
    /// generated tokens before it: `[generated]`, with gradients when the
    /// weights are trainable.
    pub fn logprobs_of(&self, prompt: &[u32], generated: &[u32]) -> Tensor {
        self.logprobs_and_states(prompt, generated).0
    }

    /// [`Llama::logprobs_of`], and the final hidden state each of
    /// `generated` was chosen from (`[generated, dim]`, what a value head
    /// reads).
    pub fn logprobs_and_states(&self, prompt: &[u32], generated: &[u32]) -> (Tensor, Tensor) {
        let all: Vec<i64> = prompt
            .iter()
            .chain(generated)
            .map(|i| i64::from(*i))
            .collect();
        let n = generated.len() as i64;
        let input = Tensor::from_slice(&all[..all.len() - 1])
            .view([1, -1])
            .to_device(self.device);
        let states = self
            .hidden(&input, &mut KvCache::default())
            .squeeze_dim(0)
            .narrow(0, prompt.len() as i64 - 1, n);
        let logp = self.head(&states).log_softmax(-1, Kind::Float);
        let targets: Vec<i64> = generated.iter().map(|i| i64::from(*i)).collect();
        let targets = Tensor::from_slice(&targets)
            .to_device(self.device)
            .unsqueeze(1);
        (
            logp.gather(1, &targets, false).squeeze_dim(1),
            states.to_kind(Kind::Float),
        )
    }

    /// The output embedding: logits from final hidden states.
    fn head(&self, states: &Tensor) -> Tensor {
        states.linear(self.head.as_ref().unwrap_or(&self.embed), None::<&Tensor>)
    }

    /// Logits `[batch, tokens, vocab]` for `tokens` (`[batch, tokens]`,
    /// int64) following the positions in `cache`, which it extends.
    pub fn forward(&self, tokens: &Tensor, cache: &mut KvCache) -> Tensor {
        self.head(&self.hidden(tokens, cache))
    }

    /// The final hidden states (after the output norm) `[batch, tokens,
    /// dim]` for `tokens` following the positions in `cache`.
    fn hidden(&self, tokens: &Tensor, cache: &mut KvCache) -> Tensor {
        let c = &self.config;
        let (b, t) = (tokens.size()[0], tokens.size()[1]);
        let past = cache.len();
        let hd = c.head_dim();
        let (cos, sin) = rope_tables(c, past, t, self.device);
        let kind = self.kind();
        let (cos, sin) = (
            cos.to_kind(kind).unsqueeze(0).unsqueeze(2),
            sin.to_kind(kind).unsqueeze(0).unsqueeze(2),
        );
        let mut x = self
            .embed
            .index_select(0, &tokens.flatten(0, -1))
            .view([b, t, c.dim]);
        // Query t (at position past + t) sees keys up to that position.
        let mask = Tensor::ones([t, past + t], (Kind::Bool, self.device)).triu(past + 1);
        for (i, layer) in self.layers.iter().enumerate() {
            let h = rms_norm(&x, &layer.attn_norm, c.eps);
            let q = layer.proj(Q, &h).view([b, t, c.heads, hd]);
            let k = layer.proj(K, &h).view([b, t, c.kv_heads, hd]);
            let v = layer.proj(V, &h).view([b, t, c.kv_heads, hd]);
            let q = rotate(&q, &cos, &sin, c.rope).transpose(1, 2);
            let k = rotate(&k, &cos, &sin, c.rope).transpose(1, 2);
            let v = v.transpose(1, 2);
            let (k, v) = cache.extend(i, k, v);
            let attn = attend(c, &q, &k, &v, Some(&mask));
            // Out of place: autograd keeps `x` for the norm's backward pass.
            x = &x + layer.proj(O, &attn);
            let h = rms_norm(&x, &layer.ffn_norm, c.eps);
            let ff = layer.proj(GATE, &h).silu() * layer.proj(UP, &h);
            x = &x + layer.proj(DOWN, &ff);
        }
        rms_norm(&x, &self.norm, c.eps)
    }

    /// One decoding step for several sequences at once: `tokens[i]`
    /// follows the positions in `caches[i]`, which it extends. Returns the
    /// next-token logits, `[tokens, vocab]`.
    ///
    /// The matrix products always run `width` rows (unused rows are
    /// padding) and attention runs per sequence, so a sequence's logits are
    /// the same bits whichever sequences share the step and in which row:
    /// a BLAS's result for a row depends on how many rows the product has.
    pub fn decode_step(&self, tokens: &[i64], caches: &mut [KvCache], width: usize) -> Tensor {
        let c = &self.config;
        let n = tokens.len().min(caches.len());
        let w = width.max(n).max(1) as i64;
        let hd = c.head_dim();
        let mut padded = tokens[..n].to_vec();
        padded.resize(w as usize, 0);
        let input = Tensor::from_slice(&padded).to_device(self.device);
        let mut x = self.embed.index_select(0, &input).view([w, 1, c.dim]);
        // Each sequence's angles, `[width, 1, 1, head_dim / 2]` (idle rows
        // at position 0): elementwise products are the same bits in any
        // shape, so the rotation runs for all rows at once.
        let (mut cos, mut sin) = (Vec::new(), Vec::new());
        for i in 0..w as usize {
            let (cs, sn) = rope_tables(c, caches.get(i).map_or(0, |k| k.len()), 1, self.device);
            cos.push(cs);
            sin.push(sn);
        }
        let shape = [w, 1, 1, hd / 2];
        let kind = self.kind();
        let (cos, sin) = (
            Tensor::cat(&cos, 0).view(shape).to_kind(kind),
            Tensor::cat(&sin, 0).view(shape).to_kind(kind),
        );
        let idle =
            (w as usize > n).then(|| Tensor::zeros([w - n as i64, 1, c.dim], (kind, self.device)));
        let scale = 1.0 / (hd as f64).sqrt();
        for (l, layer) in self.layers.iter().enumerate() {
            let h = rms_norm(&x, &layer.attn_norm, c.eps);
            let q = layer.proj(Q, &h).view([w, 1, c.heads, hd]);
            let k = layer.proj(K, &h).view([w, 1, c.kv_heads, hd]);
            let v = layer.proj(V, &h).view([w, 1, c.kv_heads, hd]);
            let q = rotate(&q, &cos, &sin, c.rope).transpose(1, 2);
            let k = rotate(&k, &cos, &sin, c.rope).transpose(1, 2);
            let v = v.transpose(1, 2);
            let mut rows = Vec::with_capacity(w as usize);
            for (i, cache) in caches[..n].iter_mut().enumerate() {
                let row = |t: &Tensor| t.narrow(0, i as i64, 1);
                let (ki, vi) = cache.extend(l, row(&k), row(&v));
                let a = Tensor::scaled_dot_product_attention(
                    &row(&q),
                    &ki,
                    &vi,
                    None::<Tensor>,
                    0.0,
                    false,
                    scale,
                    c.kv_heads != c.heads,
                );
                rows.push(a.transpose(1, 2).reshape([1, 1, c.dim]));
            }
            if let Some(idle) = &idle {
                rows.push(idle.shallow_clone());
            }
            let attn = Tensor::cat(&rows, 0);
            x = &x + layer.proj(O, &attn);
            let h = rms_norm(&x, &layer.ffn_norm, c.eps);
            let ff = layer.proj(GATE, &h).silu() * layer.proj(UP, &h);
            x = &x + layer.proj(DOWN, &ff);
        }
        let x = rms_norm(&x, &self.norm, c.eps);
        x.linear(self.head.as_ref().unwrap_or(&self.embed), None::<&Tensor>)
            .narrow(0, 0, n as i64)
            .squeeze_dim(1)
    }
}

/// Attention of queries `q` (`[batch, heads, tokens, head_dim]`) over keys
/// and values (`[batch, kv_heads, positions, head_dim]`), heads shared in
/// groups; `[batch, tokens, dim]`.
fn attend(c: &LlamaConfig, q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&Tensor>) -> Tensor {
    let groups = c.heads / c.kv_heads;
    let (k, v) = if groups > 1 {
        (
            k.repeat_interleave_self_int(groups, 1, None::<i64>),
            v.repeat_interleave_self_int(groups, 1, None::<i64>),
        )
    } else {
        (k.shallow_clone(), v.shallow_clone())
    };
    let scale = 1.0 / (c.head_dim() as f64).sqrt();
    // Scores in f32 (a no-op for an f32 model), so bf16 rounds them once.
    let scores = (q.matmul(&k.transpose(-2, -1)) * scale).to_kind(Kind::Float);
    let scores = match mask {
        Some(m) => scores.masked_fill(m, f64::NEG_INFINITY),
        None => scores,
    };
    let attn = scores.softmax(-1, Kind::Float).to_kind(v.kind()).matmul(&v);
    let (b, t) = (q.size()[0], q.size()[2]);
    attn.transpose(1, 2).contiguous().view([b, t, c.dim])
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

/// In `f32` whatever the weights' type (the result has `x`'s type; both
/// conversions are no-ops for an `f32` model).
fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Tensor {
    let x32 = x.to_kind(Kind::Float);
    let var = x32.pow_tensor_scalar(2).mean_dim(-1, true, Kind::Float);
    (x32 * (var + eps).rsqrt()).to_kind(x.kind()) * w
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

/// Rotates `x` (`[batch, tokens, heads, head_dim]`) by the angles (`cos`
/// and `sin` broadcast to `[batch, tokens, 1, head_dim / 2]`).
fn rotate(x: &Tensor, cos: &Tensor, sin: &Tensor, rope: Rope) -> Tensor {
    let size = x.size();
    match rope {
        Rope::Adjacent => {
            let pairs = x.view([size[0], size[1], size[2], size[3] / 2, 2]);
            let (a, b) = (pairs.select(-1, 0), pairs.select(-1, 1));
            let ra = &a * cos - &b * sin;
            let rb = &a * sin + &b * cos;
            Tensor::stack(&[ra, rb], -1).view(size.as_slice())
        }
        Rope::Halves => {
            let half = size[3] / 2;
            let (a, b) = (x.narrow(-1, 0, half), x.narrow(-1, half, half));
            let ra = &a * cos - &b * sin;
            let rb = &b * cos + &a * sin;
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

    /// A small shape for the adapter tests: 12 tokens, width 16.
    fn small(layers: i64) -> LlamaConfig {
        LlamaConfig {
            vocab: 12,
            dim: 16,
            layers,
            heads: 2,
            kv_heads: 1,
            ffn: 32,
            eps: 1e-5,
            rope_theta: 10_000.0,
            rope: Rope::Halves,
            context: 32,
        }
    }

    /// Adapters start at zero (the model is unchanged), are what training
    /// moves, and move the model: a few Adam steps on one answer's
    /// log-probability raise it, with every weight left as it was.
    #[test]
    fn lora_adapters_train_and_leave_the_weights_alone() {
        let config = small(2);
        let mut model = Llama::random(config, 1, Device::Cpu).expect("random");
        // Logits of a random model with small embeddings are all near zero,
        // and only the output norm (which adapters leave alone) could widen
        // them: widen them from the start.
        model.norm = model.norm.ones_like() * 30.0;
        let (prompt, answer) = ([1u32, 2, 3], [7u32]);
        let before = tch::no_grad(|| model.logprobs_of(&prompt, &answer).double_value(&[0]));
        let weights: Vec<Tensor> = model.params().iter().map(Tensor::copy).collect();
        let targets: Vec<String> = LORA_TARGETS.iter().map(|s| s.to_string()).collect();
        model.add_lora(2, 4.0, &targets, 5).expect("lora");
        let same = tch::no_grad(|| model.logprobs_of(&prompt, &answer).double_value(&[0]));
        assert_eq!(before, same);
        let mut params: Vec<Tensor> = model.lora_named().into_iter().map(|(_, t)| t).collect();
        assert_eq!(params.len(), 2 * 7 * 2);
        let mut adam = crate::learner::Adam::new(&params);
        for _ in 0..30 {
            let loss = -model.logprobs_of(&prompt, &answer).sum(Kind::Float);
            loss.backward();
            adam.step(&mut params, 0.01, 1.0);
        }
        let after = tch::no_grad(|| model.logprobs_of(&prompt, &answer).double_value(&[0]));
        assert!(after > before + 0.5, "{before} -> {after}");
        for (w, now) in weights.iter().zip(model.params()) {
            assert!(w.equal(&now));
        }
    }

    /// A bf16 model's adapters are merged into the saved weights in `f32`:
    /// a change smaller than a bf16 weight's rounding step is kept, and
    /// the folder reads back as the weights plus the adapters' product;
    /// `unmerge_lora` takes them apart again, exactly.
    #[test]
    fn adapters_on_a_bf16_model_are_saved_merged_in_f32() {
        let config = small(1);
        let mut model = Llama::random(config, 1, Device::Cpu).expect("random");
        model.to_kind(Kind::BFloat16);
        model
            .add_lora(2, 4.0, &["q_proj".to_string()], 5)
            .expect("lora");
        let layer = &model.layers[0];
        let lora = layer.lora[Q].as_ref().expect("adapter");
        // B a hundredth of what makes the change visible in bf16.
        tch::no_grad(|| {
            let mut b = lora.b.shallow_clone();
            let _ = b.fill_(1e-6);
        });
        let expected = tch::no_grad(|| {
            layer.wq.to_kind(Kind::Float)
                + lora
                    .b
                    .to_kind(Kind::Float)
                    .matmul(&lora.a.to_kind(Kind::Float))
                    * lora.scale
        });
        let rounded = tch::no_grad(|| &layer.wq + lora.b.matmul(&lora.a) * lora.scale);
        let kept = rounded
            .ne_tensor(&layer.wq)
            .to_kind(Kind::Float)
            .mean(Kind::Float)
            .double_value(&[]);
        assert!(
            kept < 0.1,
            "in bf16 most of the change rounds away ({kept})"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        model.save(dir.path()).expect("save");
        let back = Llama::from_folder(dir.path(), Device::Cpu).expect("read back");
        let diff = (&back.layers[0].wq - &expected)
            .abs()
            .max()
            .double_value(&[]);
        assert!(diff < 1e-9, "merged weights off by {diff}");
        assert!(!back.layers[0].wq.equal(&layer.wq.to_kind(Kind::Float)));
        // Served in bf16, the adapters come back apart and the weights to
        // their bf16 values: the model computes as the trained one did.
        let mut served = Llama::from_folder(dir.path(), Device::Cpu).expect("read back");
        assert!(served.unmerge_lora(dir.path()).expect("unmerge"));
        served.to_kind(Kind::BFloat16);
        assert!(served.layers[0].wq.equal(&layer.wq));
        let apart = served.layers[0].lora[Q].as_ref().expect("adapter");
        assert!(apart.b.equal(&lora.b) && apart.a.equal(&lora.a));
        assert!(!apart.b.requires_grad(), "served adapters are frozen");
        let (prompt, answer) = ([1u32, 2, 3], [7u32]);
        let lp = |m: &Llama| tch::no_grad(|| m.logprobs_of(&prompt, &answer).double_value(&[0]));
        assert_eq!(lp(&served), lp(&model));
        // A folder without adapters is left as it is.
        let plain = tempfile::tempdir().expect("tempdir");
        back.save(plain.path()).expect("save");
        assert!(!served.unmerge_lora(plain.path()).expect("no adapters"));
    }
}
