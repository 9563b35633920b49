//! Policies: an MLP actor and an MLP critic over the env's vector observation,
//! with a discrete (categorical) or continuous (Gaussian) action head chosen
//! from the env's declared action space. Parameters are plain named tensors,
//! so checkpoints, publishing weights to samplers and the hand-written Adam
//! all see the same list.

use ludus_arena::model::{Action, ActionSpace, EnvInfo, Observation, PartSpace, Value};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::rng::Rng;

/// The action head.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Head {
    Discrete { n: usize },
    Gaussian { low: Vec<f32>, high: Vec<f32> },
}

impl Head {
    /// Numbers per action in a batch tensor.
    pub fn action_dim(&self) -> usize {
        match self {
            Head::Discrete { .. } => 1,
            Head::Gaussian { low, .. } => low.len(),
        }
    }
    fn out_dim(&self) -> usize {
        match self {
            Head::Discrete { n } => *n,
            Head::Gaussian { low, .. } => low.len(),
        }
    }
}

/// The shape of a policy: what it reads, what it outputs, its layers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Spec {
    pub obs_dim: usize,
    /// Per input feature: (offset, scale); features are `(x - offset) * scale`.
    pub norm: Vec<(f32, f32)>,
    pub head: Head,
    pub hidden: Vec<usize>,
}

impl Spec {
    /// The policy for an env: its vector and discrete observation parts
    /// (bounded boxes scaled to [-1, 1]) and its discrete or continuous actions.
    pub fn for_env(info: &EnvInfo, hidden: &[usize]) -> Result<Spec, String> {
        let mut norm = Vec::new();
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
                PartSpace::Image(_) | PartSpace::Text(_) | PartSpace::Tree => {}
            }
        }
        if norm.is_empty() {
            return Err(format!(
                "env `{}` has no vector or discrete observation part: the MLP policy reads only those (image observations need the CNN policy, not built yet)",
                info.name
            ));
        }
        let head = head_for(&info.action_space).ok_or_else(|| {
            format!(
                "env `{}` accepts neither discrete nor continuous actions: the trainer's heads are discrete and Gaussian (the pointer head is not built yet)",
                info.name
            )
        })?;
        Ok(Spec {
            obs_dim: norm.len(),
            norm,
            head,
            hidden: hidden.to_vec(),
        })
    }

    /// The policy's input for an observation: vector and discrete parts in
    /// order, normalised. Missing or short parts read as zeros.
    pub fn features(&self, obs: &Observation, out: &mut Vec<f32>) {
        let start = out.len();
        for part in obs {
            match &part.value {
                Value::Vector(v) => out.extend_from_slice(v),
                Value::Discrete(d) => out.push(*d as f32),
                _ => {}
            }
        }
        out.resize(start + self.obs_dim, 0.0);
        for (x, (off, scale)) in out[start..].iter_mut().zip(&self.norm) {
            *x = (*x - off) * scale;
        }
    }

    /// The env action for a sampled action vector (continuous actions are
    /// clipped to the box; the log-probability is of the unclipped sample).
    pub fn env_action(&self, a: &[f32]) -> Action {
        match &self.head {
            Head::Discrete { .. } => Action::Discrete(a.first().copied().unwrap_or(0.0) as u32),
            Head::Gaussian { low, high } => Action::Continuous(
                a.iter()
                    .zip(low.iter().zip(high))
                    .map(|(x, (lo, hi))| x.clamp(*lo, *hi))
                    .collect(),
            ),
        }
    }
}

fn head_for(space: &ActionSpace) -> Option<Head> {
    if let Some(n) = space.discrete {
        return Some(Head::Discrete { n: n as usize });
    }
    space.continuous.as_ref().map(|b| Head::Gaussian {
        low: b.low.clone(),
        high: b.high.clone(),
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

fn layers(spec: &Spec, prefix: &str, out: usize) -> Vec<(String, Vec<i64>, f64)> {
    let mut dims = vec![spec.obs_dim];
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
        v.push((
            format!("{prefix}.{i}.w"),
            vec![fan_in as i64, fan_out as i64],
            gain,
        ));
        v.push((format!("{prefix}.{i}.b"), vec![fan_out as i64], 0.0));
    }
    v
}

fn shapes(spec: &Spec) -> Vec<(String, Vec<i64>, f64)> {
    let mut v = layers(spec, "actor", spec.head.out_dim());
    if let Head::Gaussian { low, .. } = &spec.head {
        v.push(("actor.log_std".into(), vec![low.len() as i64], 0.0));
    }
    v.extend(layers(spec, "critic", 1));
    v
}

impl Policy {
    /// A freshly initialised policy (scaled normal weights from `seed`, zero biases).
    pub fn new(spec: Spec, seed: u64, device: Device) -> Policy {
        let mut rng = Rng::new(seed);
        let values: Vec<Vec<f32>> = shapes(&spec)
            .iter()
            .map(|(_, shape, gain)| {
                let n: i64 = shape.iter().product();
                let fan_in = shape[0] as f64;
                (0..n)
                    .map(|_| {
                        if shape.len() == 2 {
                            (rng.normal() * gain / fan_in.sqrt()) as f32
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
        for ((name, shape, _), v) in shapes.into_iter().zip(values) {
            let t = Tensor::from_slice(v)
                .view(shape.as_slice())
                .to_device(device)
                .set_requires_grad(true);
            names.push(name);
            params.push(t);
        }
        Policy {
            spec,
            names,
            params,
            device,
        }
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

    /// Forward pass over a batch of features `[B, obs_dim]`.
    pub fn forward(&self, obs: &Tensor) -> Out {
        Out {
            head: self.mlp(obs, "actor"),
            value: self.mlp(obs, "critic").squeeze_dim(-1),
        }
    }

    /// Log-probabilities `[B]` of actions `[B, action_dim]`.
    pub fn log_prob(&self, out: &Out, actions: &Tensor) -> Tensor {
        match &self.spec.head {
            Head::Discrete { .. } => {
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
            Head::Discrete { .. } => {
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
                Head::Discrete { n } => {
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

    fn check(head: Head) {
        let spec = Spec {
            obs_dim: 3,
            norm: vec![(0.0, 1.0); 3],
            head,
            hidden: vec![8, 8],
        };
        let ad = spec.head.action_dim();
        let policy = Policy::new(spec, 7, Device::Cpu);
        let mut rng = Rng::new(1);
        let features: Vec<f32> = (0..12).map(|i| (i as f32 * 0.37).sin()).collect();
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

    #[test]
    fn sampled_log_probs_match_recomputed_ones_discrete() {
        check(Head::Discrete { n: 3 });
    }

    #[test]
    fn sampled_log_probs_match_recomputed_ones_gaussian() {
        check(Head::Gaussian {
            low: vec![-1.0, -2.0],
            high: vec![1.0, 2.0],
        });
    }

    #[test]
    fn continuous_actions_are_clipped_to_the_box() {
        let spec = Spec {
            obs_dim: 1,
            norm: vec![(0.0, 1.0)],
            head: Head::Gaussian {
                low: vec![-1.0],
                high: vec![1.0],
            },
            hidden: vec![4],
        };
        assert_eq!(spec.env_action(&[3.0]), Action::Continuous(vec![1.0]));
    }
}
