//! Policies: an MLP over the env's vector observation, or a small CNN when
//! the env shows an image, with a discrete (categorical), continuous
//! (Gaussian) or pointer (a categorical over a grid of click positions on the
//! image) action head chosen from the env's declared action space.
//! Parameters are plain named tensors, so checkpoints, publishing weights to
//! samplers and the hand-written Adam all see the same list.
//!
//! The CNN's parts: the image is average-pooled in [`Spec::features`] (the
//! samplers and the learner only ever hold the small image), a stack of 3x3
//! convolutions with ReLU makes a feature map, its per-channel mean and max
//! (with any vector parts) feed the MLPs of the critic and of the discrete or
//! Gaussian actor, and the pointer head is a 1x1 convolution over the map: one
//! logit per map cell, a heatmap of where to click.

use ludus_arena::model::{
    Action, ActionSpace, EnvInfo, MouseButton, Observation, PartSpace, PointerAction, PointerKind,
    Value,
};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::config::PolicyConfig;
use crate::rng::Rng;

/// Conv layers used when the config names none: `[channels, stride]`.
pub const DEFAULT_CONV: &[[usize; 2]] = &[[16, 1], [32, 1]];
/// Image downsampling factor used when the config names none.
pub const DEFAULT_DOWNSAMPLE: usize = 4;

/// The action head.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Head {
    Discrete {
        n: usize,
    },
    Gaussian {
        low: Vec<f32>,
        high: Vec<f32>,
    },
    /// A left click at the centre of one cell of a `grid_w` x `grid_h` grid
    /// laid over a `width` x `height` pointer surface (the CNN's feature map).
    Pointer {
        width: u32,
        height: u32,
        grid_w: usize,
        grid_h: usize,
    },
}

impl Head {
    /// Numbers per action in a batch tensor.
    pub fn action_dim(&self) -> usize {
        match self {
            Head::Discrete { .. } | Head::Pointer { .. } => 1,
            Head::Gaussian { low, .. } => low.len(),
        }
    }
    fn out_dim(&self) -> usize {
        match self {
            Head::Discrete { n } => *n,
            Head::Gaussian { low, .. } => low.len(),
            Head::Pointer { grid_w, grid_h, .. } => grid_w * grid_h,
        }
    }
    /// The pixel a pointer cell stands for (the cell's centre).
    pub fn pointer_position(&self, cell: usize) -> Option<(i32, i32)> {
        let Head::Pointer {
            width,
            height,
            grid_w,
            grid_h,
        } = self
        else {
            return None;
        };
        let cell = cell.min(grid_w * grid_h - 1);
        let (gx, gy) = (cell % grid_w, cell / grid_w);
        let x = (gx as f64 + 0.5) * f64::from(*width) / *grid_w as f64;
        let y = (gy as f64 + 0.5) * f64::from(*height) / *grid_h as f64;
        Some((x as i32, y as i32))
    }
}

/// The image input of a CNN policy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImageInput {
    /// The observation part read (the env's first image part).
    pub part: String,
    /// The image as declared by the env.
    pub width: usize,
    pub height: usize,
    pub channels: usize,
    /// Average-pooling factor applied before the conv net.
    pub downsample: usize,
    /// Conv layers: `[channels, stride]`, kernel 3, padding 1, ReLU.
    pub conv: Vec<[usize; 2]>,
}

impl ImageInput {
    /// The pooled image's (height, width).
    pub fn pooled(&self) -> (usize, usize) {
        (
            (self.height / self.downsample).max(1),
            (self.width / self.downsample).max(1),
        )
    }

    /// Floats per observation: the pooled image, channels first.
    pub fn len(&self) -> usize {
        let (h, w) = self.pooled();
        self.channels * h * w
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The feature map's (channels, height, width).
    pub fn map(&self) -> (usize, usize, usize) {
        let (mut h, mut w) = self.pooled();
        let mut c = self.channels;
        for &[ch, stride] in &self.conv {
            // Kernel 3, padding 1.
            h = (h - 1) / stride + 1;
            w = (w - 1) / stride + 1;
            c = ch;
        }
        (c, h, w)
    }

    /// Appends the pooled image of `obs` (channels first, scaled to [0, 1]);
    /// zeros when the part is missing or not the declared size.
    fn append(&self, obs: &Observation, out: &mut Vec<f32>) {
        let start = out.len();
        let (ph, pw) = self.pooled();
        out.resize(start + self.len(), 0.0);
        let image = obs.iter().find_map(|p| match &p.value {
            Value::Image(im) if p.name == self.part => Some(im),
            _ => None,
        });
        let Some(im) = image else { return };
        let (w, c, f) = (self.width, self.channels, self.downsample);
        if im.width as usize != w
            || im.height as usize != self.height
            || im.channels as usize != c
            || im.pixels.len() < w * self.height * c
        {
            return;
        }
        let dst = &mut out[start..];
        let scale = 1.0 / (255.0 * (f * f) as f32);
        for y in 0..ph * f {
            let row = &im.pixels[y * w * c..(y + 1) * w * c];
            let py = y / f;
            for x in 0..pw * f {
                let px = x / f;
                for ch in 0..c {
                    dst[(ch * ph + py) * pw + px] += f32::from(row[x * c + ch]) * scale;
                }
            }
        }
    }
}

/// The shape of a policy: what it reads, what it outputs, its layers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Spec {
    /// Floats per observation: the vector features, then the pooled image.
    pub obs_dim: usize,
    /// Per vector feature: (offset, scale); features are `(x - offset) * scale`.
    pub norm: Vec<(f32, f32)>,
    pub head: Head,
    pub hidden: Vec<usize>,
    /// The CNN's input, when the policy reads an image.
    #[serde(default)]
    pub image: Option<ImageInput>,
}

impl Spec {
    /// An MLP policy over `norm.len()` vector features.
    pub fn mlp(norm: Vec<(f32, f32)>, head: Head, hidden: Vec<usize>) -> Spec {
        Spec {
            obs_dim: norm.len(),
            norm,
            head,
            hidden,
            image: None,
        }
    }

    /// The policy for an env with default conv layers (see [`Spec::from_config`]).
    pub fn for_env(info: &EnvInfo, hidden: &[usize]) -> Result<Spec, String> {
        Spec::from_config(
            info,
            &PolicyConfig {
                hidden: hidden.to_vec(),
                conv: None,
                downsample: None,
                ..Default::default()
            },
        )
    }

    /// The policy for an env: its vector and discrete observation parts
    /// (bounded boxes scaled to [-1, 1]), its first image part through a CNN,
    /// and its discrete, continuous or pointer actions (in that order of
    /// preference).
    pub fn from_config(info: &EnvInfo, config: &PolicyConfig) -> Result<Spec, String> {
        let mut norm = Vec::new();
        let mut image = None;
        for part in &info.observation_space {
            match &part.space {
                PartSpace::Box(b) => {
                    let n: usize = b.shape.iter().map(|&d| d as usize).product();
                    for i in 0..n {
                        let (lo, hi) = (
                            b.low.get(i).copied().unwrap_or(f32::MIN),
                            b.high.get(i).copied().unwrap_or(f32::MAX),
                        );
                        let bounded =
                            lo.is_finite() && hi.is_finite() && hi > lo && (hi - lo) < 1e4;
                        norm.push(if bounded {
                            ((hi + lo) / 2.0, 2.0 / (hi - lo))
                        } else {
                            (0.0, 1.0)
                        });
                    }
                }
                PartSpace::Discrete(n) => norm.push((0.0, 1.0 / (*n).max(1) as f32)),
                PartSpace::Image(im) if image.is_none() => {
                    let downsample = config.downsample.unwrap_or(DEFAULT_DOWNSAMPLE);
                    if im.width == 0 || im.height == 0 || im.channels == 0 {
                        return Err(format!(
                            "env `{}` declares an empty image part `{}`",
                            info.name, part.name
                        ));
                    }
                    image = Some(ImageInput {
                        part: part.name.clone(),
                        width: im.width as usize,
                        height: im.height as usize,
                        channels: im.channels as usize,
                        downsample,
                        conv: config.conv.clone().unwrap_or_else(|| DEFAULT_CONV.to_vec()),
                    });
                }
                PartSpace::Image(_) | PartSpace::Text(_) | PartSpace::Tree => {}
            }
        }
        if norm.is_empty() && image.is_none() {
            return Err(format!(
                "env `{}` has no vector, discrete or image observation part: the policies read only those",
                info.name
            ));
        }
        let head = head_for(&info.action_space, image.as_ref()).ok_or_else(|| {
            format!(
                "env `{}` accepts neither discrete, continuous nor pointer actions: the trainer's heads are discrete, Gaussian and pointer",
                info.name
            )
        })?;
        if matches!(head, Head::Pointer { .. }) && image.is_none() {
            return Err(format!(
                "env `{}` takes pointer actions but shows no image: the pointer head clicks on the CNN's view of the image",
                info.name
            ));
        }
        let obs_dim = norm.len() + image.as_ref().map_or(0, ImageInput::len);
        Ok(Spec {
            obs_dim,
            norm,
            head,
            hidden: config.hidden.clone(),
            image,
        })
    }

    /// The policy's input for an observation: vector and discrete parts in
    /// order, normalised, then the pooled image. Missing or short parts read
    /// as zeros.
    pub fn features(&self, obs: &Observation, out: &mut Vec<f32>) {
        let start = out.len();
        for part in obs {
            match &part.value {
                Value::Vector(v) => out.extend_from_slice(v),
                Value::Discrete(d) => out.push(*d as f32),
                _ => {}
            }
        }
        out.resize(start + self.norm.len(), 0.0);
        for (x, (off, scale)) in out[start..].iter_mut().zip(&self.norm) {
            *x = (*x - off) * scale;
        }
        if let Some(image) = &self.image {
            image.append(obs, out);
        }
    }

    /// The env action for a sampled action vector (continuous actions are
    /// clipped to the box; the log-probability is of the unclipped sample).
    pub fn env_action(&self, a: &[f32]) -> Action {
        let first = a.first().copied().unwrap_or(0.0);
        match &self.head {
            Head::Discrete { .. } => Action::Discrete(first as u32),
            Head::Gaussian { low, high } => Action::Continuous(
                a.iter()
                    .zip(low.iter().zip(high))
                    .map(|(x, (lo, hi))| x.clamp(*lo, *hi))
                    .collect(),
            ),
            Head::Pointer { .. } => {
                let (x, y) = self.head.pointer_position(first as usize).unwrap_or((0, 0));
                Action::Pointer(PointerAction {
                    kind: PointerKind::Click,
                    button: MouseButton::Left,
                    x,
                    y,
                    to_x: x,
                    to_y: y,
                    dx: 0,
                    dy: 0,
                })
            }
        }
    }
}

fn head_for(space: &ActionSpace, image: Option<&ImageInput>) -> Option<Head> {
    if let Some(n) = space.discrete {
        return Some(Head::Discrete { n: n as usize });
    }
    if let Some(b) = &space.continuous {
        return Some(Head::Gaussian {
            low: b.low.clone(),
            high: b.high.clone(),
        });
    }
    let (width, height) = space.pointer?;
    let (grid_w, grid_h) = image.map_or((1, 1), |im| {
        let (_, h, w) = im.map();
        (w, h)
    });
    Some(Head::Pointer {
        width,
        height,
        grid_w,
        grid_h,
    })
}

/// One sampled action with what the learner needs later.
#[derive(Clone, Debug, PartialEq)]
pub struct Sampled {
    pub action: Vec<f32>,
    pub log_prob: f32,
    pub value: f32,
}

/// What a forward pass gives: the head's output (logits or mean) and values.
pub struct Out {
    pub head: Tensor,
    pub value: Tensor,
}

pub struct Policy {
    pub spec: Spec,
    pub names: Vec<String>,
    pub params: Vec<Tensor>,
    pub device: Device,
}

/// One parameter: name, shape, fan-in and gain of its initial normal weights
/// (fan-in 0: starts at zero).
struct Param {
    name: String,
    shape: Vec<i64>,
    fan_in: usize,
    gain: f64,
}

fn layers(spec: &Spec, prefix: &str, input: usize, out: usize) -> Vec<Param> {
    let mut dims = vec![input];
    dims.extend(&spec.hidden);
    let mut v = Vec::new();
    for i in 0..dims.len() {
        let (fan_in, fan_out) = (dims[i], if i + 1 < dims.len() { dims[i + 1] } else { out });
        let last = i + 1 == dims.len();
        // Small final actor layer: start near-uniform (as PPO implementations do).
        let gain = match (last, prefix) {
            (false, _) => std::f64::consts::SQRT_2,
            (true, "actor") => 0.01,
            (true, _) => 1.0,
        };
        v.push(Param {
            name: format!("{prefix}.{i}.w"),
            shape: vec![fan_in as i64, fan_out as i64],
            fan_in,
            gain,
        });
        v.push(Param {
            name: format!("{prefix}.{i}.b"),
            shape: vec![fan_out as i64],
            fan_in: 0,
            gain: 0.0,
        });
    }
    v
}

/// The MLPs' input width: the vector features, plus the feature map's
/// per-channel mean and max when there is an image.
fn trunk_dim(spec: &Spec) -> usize {
    match &spec.image {
        Some(im) => spec.norm.len() + 2 * im.map().0,
        None => spec.obs_dim,
    }
}

/// Every parameter in order: conv layers, the actor (MLP or pointer map), the critic.
fn shapes(spec: &Spec) -> Vec<Param> {
    let mut v = Vec::new();
    if let Some(im) = &spec.image {
        let mut c_in = im.channels;
        for (i, &[c, _]) in im.conv.iter().enumerate() {
            v.push(Param {
                name: format!("conv.{i}.w"),
                shape: vec![c as i64, c_in as i64, 3, 3],
                fan_in: c_in * 9,
                gain: std::f64::consts::SQRT_2,
            });
            v.push(Param {
                name: format!("conv.{i}.b"),
                shape: vec![c as i64],
                fan_in: 0,
                gain: 0.0,
            });
            c_in = c;
        }
    }
    let trunk = trunk_dim(spec);
    match (&spec.head, &spec.image) {
        (Head::Pointer { .. }, Some(im)) => {
            let c = im.map().0;
            v.push(Param {
                name: "pointer.w".into(),
                shape: vec![1, c as i64, 1, 1],
                fan_in: c,
                gain: 0.01,
            });
            v.push(Param {
                name: "pointer.b".into(),
                shape: vec![1],
                fan_in: 0,
                gain: 0.0,
            });
        }
        _ => v.extend(layers(spec, "actor", trunk, spec.head.out_dim())),
    }
    if let Head::Gaussian { low, .. } = &spec.head {
        v.push(Param {
            name: "actor.log_std".into(),
            shape: vec![low.len() as i64],
            fan_in: 0,
            gain: 0.0,
        });
    }
    v.extend(layers(spec, "critic", trunk, 1));
    v
}

impl Policy {
    /// A freshly initialised policy (scaled normal weights from `seed`, zero biases).
    pub fn new(spec: Spec, seed: u64, device: Device) -> Policy {
        let mut rng = Rng::new(seed);
        let values: Vec<Vec<f32>> = shapes(&spec)
            .iter()
            .map(|p| {
                let n: i64 = p.shape.iter().product();
                (0..n)
                    .map(|_| {
                        if p.fan_in > 0 {
                            (rng.normal() * p.gain / (p.fan_in as f64).sqrt()) as f32
                        } else {
                            0.0
                        }
                    })
                    .collect()
            })
            .collect();
        Policy::from_values(spec, &values, device)
    }

    /// A policy with the given parameter values (in [`Policy::names`] order).
    pub fn from_values(spec: Spec, values: &[Vec<f32>], device: Device) -> Policy {
        let shapes = shapes(&spec);
        let mut names = Vec::new();
        let mut params = Vec::new();
        for (p, v) in shapes.into_iter().zip(values) {
            let t = Tensor::from_slice(v)
                .view(p.shape.as_slice())
                .to_device(device)
                .set_requires_grad(true);
            names.push(p.name);
            params.push(t);
        }
        Policy {
            spec,
            names,
            params,
            device,
        }
    }

    /// The parameter names of a spec, in order (e.g. to read a checkpoint).
    pub fn param_names(spec: &Spec) -> Vec<String> {
        shapes(spec).into_iter().map(|p| p.name).collect()
    }

    /// A policy on the CPU with the given parameter values (e.g. a checkpoint's).
    pub fn on_cpu(spec: Spec, values: &[Vec<f32>]) -> Policy {
        Policy::from_values(spec, values, Device::Cpu)
    }

    /// Parameter values on the CPU, in [`Policy::names`] order.
    pub fn values(&self) -> Vec<Vec<f32>> {
        self.params
            .iter()
            .map(|p| {
                let flat = p.detach().to_device(Device::Cpu).flatten(0, -1);
                Vec::<f32>::try_from(&flat).unwrap_or_default()
            })
            .collect()
    }

    /// Overwrites the parameters with published values.
    pub fn load_values(&mut self, values: &[Vec<f32>]) {
        tch::no_grad(|| {
            for (p, v) in self.params.iter_mut().zip(values) {
                let src = Tensor::from_slice(v)
                    .view(p.size().as_slice())
                    .to_device(self.device);
                p.copy_(&src);
            }
        });
    }

    fn mlp(&self, x: &Tensor, prefix: &str) -> Tensor {
        let n = self.spec.hidden.len() + 1;
        let mut h = x.shallow_clone();
        for i in 0..n {
            let w = self.param(&format!("{prefix}.{i}.w"));
            let b = self.param(&format!("{prefix}.{i}.b"));
            h = h.matmul(w) + b;
            if i + 1 < n {
                h = h.tanh();
            }
        }
        h
    }

    fn param(&self, name: &str) -> &Tensor {
        let i = self.names.iter().position(|n| n == name);
        // The names come from `shapes`, the same function that asks for them.
        &self.params[i.unwrap_or(0)]
    }

    /// The conv net's feature map `[B, C, h, w]` and the MLPs' input `[B, D]`.
    fn trunk(&self, obs: &Tensor) -> (Option<Tensor>, Tensor) {
        let Some(im) = &self.spec.image else {
            return (None, obs.shallow_clone());
        };
        let b = obs.size()[0];
        let v = self.spec.norm.len() as i64;
        let (ph, pw) = im.pooled();
        let mut x =
            obs.narrow(1, v, im.len() as i64)
                .view([b, im.channels as i64, ph as i64, pw as i64]);
        for (i, &[_, stride]) in im.conv.iter().enumerate() {
            let w = self.param(&format!("conv.{i}.w"));
            let bias = self.param(&format!("conv.{i}.b"));
            let s = stride as i64;
            x = x.conv2d(w, Some(bias), [s, s], [1, 1], [1, 1], 1).relu();
        }
        let pooled = Tensor::cat(
            &[
                obs.narrow(1, 0, v),
                x.mean_dim([2i64, 3].as_slice(), false, Kind::Float),
                x.amax([2i64, 3], false),
            ],
            1,
        );
        (Some(x), pooled)
    }

    /// Forward pass over a batch of features `[B, obs_dim]`.
    pub fn forward(&self, obs: &Tensor) -> Out {
        let (map, trunk) = self.trunk(obs);
        let head = match (&self.spec.head, map) {
            (Head::Pointer { .. }, Some(map)) => {
                let w = self.param("pointer.w");
                let b = self.param("pointer.b");
                map.conv2d(w, Some(b), [1, 1], [0, 0], [1, 1], 1)
                    .flatten(1, -1)
            }
            _ => self.mlp(&trunk, "actor"),
        };
        Out {
            head,
            value: self.mlp(&trunk, "critic").squeeze_dim(-1),
        }
    }

    /// Log-probabilities `[B]` of actions `[B, action_dim]`.
    pub fn log_prob(&self, out: &Out, actions: &Tensor) -> Tensor {
        match &self.spec.head {
            Head::Discrete { .. } | Head::Pointer { .. } => {
                let logp = out.head.log_softmax(-1, Kind::Float);
                logp.gather(-1, &actions.to_kind(Kind::Int64), false)
                    .squeeze_dim(-1)
            }
            Head::Gaussian { .. } => {
                let log_std = self.param("actor.log_std");
                let z = (actions - &out.head) / log_std.exp();
                let per = z.square() * -0.5 - log_std - 0.5 * (std::f64::consts::TAU).ln();
                per.sum_dim_intlist(-1, false, Kind::Float)
            }
        }
    }

    /// Entropies `[B]` of the action distributions.
    pub fn entropy(&self, out: &Out) -> Tensor {
        match &self.spec.head {
            Head::Discrete { .. } | Head::Pointer { .. } => {
                let logp = out.head.log_softmax(-1, Kind::Float);
                -(logp.exp() * logp).sum_dim_intlist(-1, false, Kind::Float)
            }
            Head::Gaussian { .. } => {
                let log_std = self.param("actor.log_std");
                let per = log_std + 0.5 * (1.0 + (std::f64::consts::TAU).ln());
                Tensor::ones([out.head.size()[0]], (Kind::Float, self.device))
                    * per.sum(Kind::Float)
            }
        }
    }

    /// Samples actions for a batch of features (`b` rows) with `rng`.
    pub fn act(&self, features: &[f32], b: usize, rng: &mut Rng) -> Vec<Sampled> {
        tch::no_grad(|| {
            let x = Tensor::from_slice(features)
                .view([b as i64, self.spec.obs_dim as i64])
                .to_device(self.device);
            let out = self.forward(&x);
            let values =
                Vec::<f32>::try_from(&out.value.to_device(Device::Cpu)).unwrap_or_default();
            match &self.spec.head {
                Head::Discrete { .. } | Head::Pointer { .. } => {
                    let n = self.spec.head.out_dim();
                    let logp = out.head.log_softmax(-1, Kind::Float).to_device(Device::Cpu);
                    let logp = Vec::<f32>::try_from(&logp.flatten(0, -1)).unwrap_or_default();
                    (0..b)
                        .map(|i| {
                            let row = &logp[i * n..(i + 1) * n];
                            let u = rng.uniform();
                            let mut acc = 0.0;
                            let mut a = n - 1;
                            for (k, lp) in row.iter().enumerate() {
                                acc += f64::from(lp.exp());
                                if u < acc {
                                    a = k;
                                    break;
                                }
                            }
                            Sampled {
                                action: vec![a as f32],
                                log_prob: row[a],
                                value: values.get(i).copied().unwrap_or(0.0),
                            }
                        })
                        .collect()
                }
                Head::Gaussian { low, .. } => {
                    let d = low.len();
                    let mean =
                        Vec::<f32>::try_from(&out.head.to_device(Device::Cpu).flatten(0, -1))
                            .unwrap_or_default();
                    let log_std = Vec::<f32>::try_from(
                        &self.param("actor.log_std").detach().to_device(Device::Cpu),
                    )
                    .unwrap_or_default();
                    (0..b)
                        .map(|i| {
                            let mut action = Vec::with_capacity(d);
                            let mut lp = 0f64;
                            for k in 0..d {
                                let z = rng.normal();
                                let s = f64::from(log_std[k]);
                                action.push((f64::from(mean[i * d + k]) + s.exp() * z) as f32);
                                lp += -0.5 * z * z - s - 0.5 * std::f64::consts::TAU.ln();
                            }
                            Sampled {
                                action,
                                log_prob: lp as f32,
                                value: values.get(i).copied().unwrap_or(0.0),
                            }
                        })
                        .collect()
                }
            }
        })
    }

    /// Log-probabilities of given actions under this policy (no gradient), e.g.
    /// to check what samplers recorded.
    pub fn log_probs_of(&self, features: &[f32], actions: &[f32]) -> Vec<f32> {
        let b = features.len() / self.spec.obs_dim.max(1);
        tch::no_grad(|| {
            let x = Tensor::from_slice(features)
                .view([b as i64, self.spec.obs_dim as i64])
                .to_device(self.device);
            let a = Tensor::from_slice(actions)
                .view([b as i64, self.spec.head.action_dim() as i64])
                .to_device(self.device);
            let out = self.forward(&x);
            let lp = self.log_prob(&out, &a).to_device(Device::Cpu);
            Vec::<f32>::try_from(&lp).unwrap_or_default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ludus_arena::model::{BoxSpace, Image, ImageSpace, NamedSpace, Part};

    fn features(n: usize) -> Vec<f32> {
        (0..n).map(|i| (i as f32 * 0.37).sin().abs()).collect()
    }

    fn check(spec: Spec) {
        let ad = spec.head.action_dim();
        let d = spec.obs_dim;
        let policy = Policy::new(spec, 7, Device::Cpu);
        let mut rng = Rng::new(1);
        let features = features(4 * d);
        let sampled = policy.act(&features, 4, &mut rng);
        let actions: Vec<f32> = sampled.iter().flat_map(|s| s.action.clone()).collect();
        assert_eq!(actions.len(), 4 * ad);
        let lp = policy.log_probs_of(&features, &actions);
        for (s, l) in sampled.iter().zip(lp) {
            assert!((s.log_prob - l).abs() < 1e-4, "{} vs {l}", s.log_prob);
        }
        // Same values, same policy.
        let copy = Policy::on_cpu(policy.spec.clone(), &policy.values());
        assert_eq!(
            copy.log_probs_of(&features, &actions),
            policy.log_probs_of(&features, &actions)
        );
    }

    fn mlp(head: Head) -> Spec {
        Spec::mlp(vec![(0.0, 1.0); 3], head, vec![8, 8])
    }

    /// A CNN spec: `vector` vector features, then a 3-channel 12x16 image
    /// pooled by 2 (6x8) through conv layers of 4 (stride 1) and 8 (stride 2)
    /// channels: a 3x4 map.
    fn cnn(vector: usize, head: Head) -> Spec {
        let image = ImageInput {
            part: "screen".into(),
            width: 16,
            height: 12,
            channels: 3,
            downsample: 2,
            conv: vec![[4, 1], [8, 2]],
        };
        Spec {
            obs_dim: vector + image.len(),
            norm: vec![(0.0, 1.0); vector],
            head,
            hidden: vec![8],
            image: Some(image),
        }
    }

    fn pointer() -> Head {
        Head::Pointer {
            width: 16,
            height: 12,
            grid_w: 4,
            grid_h: 3,
        }
    }

    #[test]
    fn sampled_log_probs_match_recomputed_ones_discrete() {
        check(mlp(Head::Discrete { n: 3 }));
    }

    #[test]
    fn sampled_log_probs_match_recomputed_ones_gaussian() {
        check(mlp(Head::Gaussian {
            low: vec![-1.0, -2.0],
            high: vec![1.0, 2.0],
        }));
    }

    #[test]
    fn sampled_log_probs_match_recomputed_ones_cnn_heads() {
        check(cnn(0, pointer()));
        check(cnn(2, pointer()));
        check(cnn(2, Head::Discrete { n: 5 }));
        check(cnn(
            1,
            Head::Gaussian {
                low: vec![-1.0],
                high: vec![1.0],
            },
        ));
    }

    #[test]
    fn cnn_forward_shapes() {
        for (vector, head, out) in [
            (0, pointer(), 12),
            (2, pointer(), 12),
            (2, Head::Discrete { n: 5 }, 5),
        ] {
            let spec = cnn(vector, head);
            assert_eq!(spec.image.as_ref().map(ImageInput::map), Some((8, 3, 4)));
            assert_eq!(spec.obs_dim, vector + 3 * 6 * 8);
            let policy = Policy::new(spec.clone(), 3, Device::Cpu);
            let x = Tensor::from_slice(&features(5 * spec.obs_dim)).view([5, spec.obs_dim as i64]);
            let o = policy.forward(&x);
            assert_eq!(o.head.size(), vec![5, out]);
            assert_eq!(o.value.size(), vec![5]);
            // The critic reads the vector features and the map's mean and max per channel.
            assert_eq!(trunk_dim(&spec), vector + 16);
        }
        // Conv weights are [out, in, 3, 3]; the pointer map a 1x1 conv.
        let policy = Policy::new(cnn(0, pointer()), 3, Device::Cpu);
        let shape = |n: &str| policy.param(n).size();
        assert_eq!(shape("conv.0.w"), vec![4, 3, 3, 3]);
        assert_eq!(shape("conv.1.w"), vec![8, 4, 3, 3]);
        assert_eq!(shape("pointer.w"), vec![1, 8, 1, 1]);
        assert!(!policy.names.iter().any(|n| n.starts_with("actor")));
    }

    #[test]
    fn pointer_head_is_a_categorical_over_the_grid() {
        let policy = Policy::new(cnn(0, pointer()), 5, Device::Cpu);
        let b = 3;
        let feats = features(b * policy.spec.obs_dim);
        let x = Tensor::from_slice(&feats).view([b as i64, policy.spec.obs_dim as i64]);
        let out = policy.forward(&x);
        // Probabilities over all 12 cells sum to 1 for every row.
        let all: Vec<f32> = (0..12).map(|c| c as f32).collect();
        for row in 0..b {
            let f = &feats[row * policy.spec.obs_dim..(row + 1) * policy.spec.obs_dim];
            let lp = policy.log_probs_of(&f.repeat(12), &all);
            let total: f32 = lp.iter().map(|l| l.exp()).sum();
            assert!((total - 1.0).abs() < 1e-4, "row {row}: {total}");
            // The entropy is the expectation of -log p.
            let h: f32 = lp.iter().map(|l| -l.exp() * l).sum();
            let e = policy.entropy(&out).double_value(&[row as i64]) as f32;
            assert!((h - e).abs() < 1e-4, "{h} vs {e}");
        }
        // A fresh pointer head starts near uniform: entropy close to ln 12.
        let e = policy.entropy(&out).mean(Kind::Float).double_value(&[]);
        assert!((e - 12f64.ln()).abs() < 0.01, "{e}");
        // Gradients reach the conv layers through the pointer head.
        let a = Tensor::from_slice(&[0f32, 5.0, 11.0]).view([3, 1]);
        policy.log_prob(&out, &a).sum(Kind::Float).backward();
        assert!(
            policy
                .param("conv.0.w")
                .grad()
                .abs()
                .sum(Kind::Float)
                .double_value(&[])
                > 0.0
        );
    }

    #[test]
    fn pointer_cells_click_at_their_centres() {
        let spec = cnn(0, pointer());
        // 16x12 surface, 4x3 grid: cells are 4 pixels square.
        assert_eq!(spec.head.pointer_position(0), Some((2, 2)));
        assert_eq!(spec.head.pointer_position(5), Some((6, 6)));
        assert_eq!(spec.head.pointer_position(11), Some((14, 10)));
        assert_eq!(spec.head.pointer_position(99), Some((14, 10)));
        match spec.env_action(&[6.0]) {
            Action::Pointer(p) => {
                assert_eq!(
                    (p.kind, p.button, p.x, p.y),
                    (PointerKind::Click, MouseButton::Left, 10, 6)
                );
            }
            other => panic!("not a pointer action: {other:?}"),
        }
    }

    #[test]
    fn features_pool_the_image_channels_first() {
        let spec = cnn(1, pointer());
        // Pixel (x, y) channel c = x + 16 * c: each pooled value is the mean of a 2x2 block.
        let mut pixels = Vec::new();
        for _y in 0..12 {
            for x in 0..16u8 {
                pixels.extend([x, x + 16, x + 32]);
            }
        }
        let obs = vec![
            Part {
                name: "pos".into(),
                value: Value::Vector(vec![0.5]),
            },
            Part {
                name: "screen".into(),
                value: Value::Image(Image {
                    width: 16,
                    height: 12,
                    channels: 3,
                    pixels,
                }),
            },
        ];
        let mut out = vec![9.0];
        spec.features(&obs, &mut out);
        assert_eq!(out.len(), 1 + spec.obs_dim);
        assert_eq!(out[1], 0.5);
        let img = &out[2..];
        let at = |c: usize, y: usize, x: usize| img[(c * 6 + y) * 8 + x] * 255.0;
        assert!((at(0, 0, 0) - 0.5).abs() < 1e-3);
        assert!((at(0, 5, 7) - 14.5).abs() < 1e-3);
        assert!((at(2, 3, 1) - 34.5).abs() < 1e-3);
        // A missing or wrongly sized image reads as zeros.
        let mut out = Vec::new();
        spec.features(&obs[..1].to_vec(), &mut out);
        assert_eq!(out.len(), spec.obs_dim);
        assert!(out[1..].iter().all(|&x| x == 0.0));
    }

    fn desktop_like(pointer: bool, image: bool) -> EnvInfo {
        let mut observation_space = vec![NamedSpace {
            name: "instruction".into(),
            space: PartSpace::Text(64),
        }];
        if image {
            observation_space.push(NamedSpace {
                name: "screen".into(),
                space: PartSpace::Image(ImageSpace {
                    width: 64,
                    height: 48,
                    channels: 3,
                }),
            });
        } else {
            observation_space.push(NamedSpace {
                name: "pos".into(),
                space: PartSpace::Box(BoxSpace {
                    shape: vec![2],
                    low: vec![0.0; 2],
                    high: vec![1.0; 2],
                }),
            });
        }
        EnvInfo {
            name: "desk".into(),
            version: "0".into(),
            description: String::new(),
            observation_space,
            action_space: ActionSpace {
                discrete: None,
                continuous: None,
                pointer: pointer.then_some((64, 48)),
                text: Some(8),
                keys: None,
                element: false,
            },
            max_steps: 5,
            vector_size: 0,
        }
    }

    #[test]
    fn the_env_spaces_choose_cnn_and_pointer_head() {
        let config = PolicyConfig {
            hidden: vec![16],
            conv: Some(vec![[8, 1], [8, 2]]),
            downsample: Some(4),
            ..Default::default()
        };
        let spec = Spec::from_config(&desktop_like(true, true), &config).unwrap();
        let image = spec.image.clone().unwrap();
        assert_eq!((image.pooled(), image.map()), ((12, 16), (8, 6, 8)));
        assert_eq!(
            spec.head,
            Head::Pointer {
                width: 64,
                height: 48,
                grid_w: 8,
                grid_h: 6
            }
        );
        assert_eq!(spec.obs_dim, 3 * 12 * 16);
        // The defaults apply when the config names no conv layers.
        let spec = Spec::for_env(&desktop_like(true, true), &[16]).unwrap();
        assert_eq!(spec.image.unwrap().conv, DEFAULT_CONV.to_vec());
        // Pointer actions without an image, or no action the heads know: clear errors.
        let e = Spec::from_config(&desktop_like(true, false), &config).unwrap_err();
        assert!(e.contains("pointer") && e.contains("image"), "{e}");
        let e = Spec::from_config(&desktop_like(false, true), &config).unwrap_err();
        assert!(
            e.contains("neither discrete, continuous nor pointer"),
            "{e}"
        );
    }

    #[test]
    fn continuous_actions_are_clipped_to_the_box() {
        let spec = Spec::mlp(
            vec![(0.0, 1.0)],
            Head::Gaussian {
                low: vec![-1.0],
                high: vec![1.0],
            },
            vec![4],
        );
        assert_eq!(spec.env_action(&[3.0]), Action::Continuous(vec![1.0]));
    }
}
