//! The learner's update: advantages for a batch of segments, then epochs of
//! minibatch steps on the configured loss. Pure computation on tensors: no
//! threads, no I/O.

use std::collections::BTreeMap;

use tch::{Device, Kind, Tensor};

use crate::advantage;
use crate::config::{AdvantageKind, Config, PolicyLossKind, Schedule};
use crate::policy::{Out, Policy};
use crate::rng::Rng;
use crate::sampler::Segment;

/// Adam with its state in plain tensors, so checkpoints can save it.
///
/// A parameter held in a narrower type than `f32` (bf16) gets an `f32`
/// master copy: the update is made to the copy, and the parameter is its
/// rounding, so small steps are not lost; its gradients, added up over
/// micro-batches, are added in `f32` too ([`Adam::accumulate`]). The state
/// (moments, master copies and gradient sums) can live on another device
/// than the parameters (offload: CPU memory while the parameters are on the
/// GPU); the update is then computed there and written back.
pub struct Adam {
    pub m: Vec<Tensor>,
    pub v: Vec<Tensor>,
    /// The `f32` master copy of each parameter that is not `f32`.
    pub master: Vec<Option<Tensor>>,
    /// The `f32` sum of the gradients moved out of each parameter that is
    /// not `f32`, since the last step.
    sums: Vec<Option<Tensor>>,
    pub step: i64,
}

const BETA1: f64 = 0.9;
const BETA2: f64 = 0.999;
const EPS: f64 = 1e-5;

impl Adam {
    /// The state beside each parameter, on its device.
    pub fn new(params: &[Tensor]) -> Adam {
        Adam::placed(params, None)
    }

    /// The state on `state_on` (every parameter's own device when `None`).
    pub fn placed(params: &[Tensor], state_on: Option<Device>) -> Adam {
        let on = |p: &Tensor| state_on.unwrap_or(p.device());
        let zeros = |p: &Tensor| Tensor::zeros(p.size(), (Kind::Float, on(p)));
        Adam {
            m: params.iter().map(zeros).collect(),
            v: params.iter().map(zeros).collect(),
            master: params
                .iter()
                .map(|p| {
                    (p.kind() != Kind::Float)
                        .then(|| p.detach().to_kind(Kind::Float).to_device(on(p)))
                })
                .collect(),
            sums: params.iter().map(|_| None).collect(),
            step: 0,
        }
    }

    /// Moves the gradients of the parameters narrower than `f32` into `f32`
    /// sums beside their state, so that gradients added up over
    /// micro-batches are not rounded at each addition. Call it after each
    /// micro-batch's backward pass but the last (whose gradients
    /// [`Adam::step`] adds to the sums itself, so one micro-batch needs no
    /// sums at all). `f32` parameters keep their gradients, which already
    /// add up in `f32`.
    pub fn accumulate(&mut self, params: &mut [Tensor]) {
        tch::no_grad(|| {
            for (i, p) in params.iter_mut().enumerate() {
                let g = p.grad();
                if self.master[i].is_none() || !g.defined() {
                    continue;
                }
                let g = g.to_device(self.m[i].device()).to_kind(Kind::Float);
                match &mut self.sums[i] {
                    Some(sum) => {
                        let _ = sum.g_add_(&g);
                    }
                    None => self.sums[i] = Some(g),
                }
                p.zero_grad();
            }
        })
    }

    /// Restores saved moments (empty vectors leave zeros).
    pub fn load(&mut self, m: &[Vec<f32>], v: &[Vec<f32>], step: i64) {
        tch::no_grad(|| {
            for (dst, src) in self.m.iter_mut().zip(m).chain(self.v.iter_mut().zip(v)) {
                copy_values(dst, src);
            }
        });
        self.step = step;
    }

    /// Restores saved master copies (an empty vector leaves the copy as
    /// it is).
    pub fn load_masters(&mut self, w: &[Vec<f32>]) {
        tch::no_grad(|| {
            for (dst, src) in self.master.iter_mut().zip(w) {
                if let Some(dst) = dst {
                    copy_values(dst, src);
                }
            }
        });
    }

    pub fn values(ts: &[Tensor]) -> Vec<Vec<f32>> {
        ts.iter()
            .map(|t| {
                Vec::<f32>::try_from(&t.to_device(Device::Cpu).flatten(0, -1)).unwrap_or_default()
            })
            .collect()
    }

    /// One step; clips the global gradient norm first. Returns the norm.
    pub fn step(&mut self, params: &mut [Tensor], lr: f64, max_grad_norm: f64) -> f64 {
        tch::no_grad(|| {
            // Each gradient, with what earlier micro-batches summed.
            let grads: Vec<Tensor> = params
                .iter()
                .zip(&mut self.sums)
                .map(|(p, sum)| {
                    let g = p.grad();
                    match sum.take() {
                        Some(sum) if g.defined() => {
                            let on = sum.device();
                            sum + g.to_device(on).to_kind(Kind::Float)
                        }
                        Some(sum) => sum,
                        None => g,
                    }
                })
                .collect();
            let mut sq = 0f64;
            for g in grads.iter().filter(|g| g.defined()) {
                sq += g
                    .to_kind(Kind::Float)
                    .square()
                    .sum(Kind::Float)
                    .double_value(&[]);
            }
            let norm = sq.sqrt();
            let scale = if max_grad_norm > 0.0 && norm > max_grad_norm {
                max_grad_norm / (norm + 1e-6)
            } else {
                1.0
            };
            self.step += 1;
            let bc1 = 1.0 - BETA1.powi(self.step as i32);
            let bc2 = 1.0 - BETA2.powi(self.step as i32);
            for (i, p) in params.iter_mut().enumerate() {
                let g = &grads[i];
                if !g.defined() {
                    continue;
                }
                // Where the state lives, in f32 (no copy when it is
                // beside an f32 parameter).
                let g = g.to_device(self.m[i].device()).to_kind(Kind::Float) * scale;
                let m = &mut self.m[i];
                let _ = m.g_mul_scalar_(BETA1);
                let _ = m.g_add_(&(&g * (1.0 - BETA1)));
                let v = &mut self.v[i];
                let _ = v.g_mul_scalar_(BETA2);
                let _ = v.g_add_(&(g.square() * (1.0 - BETA2)));
                let update = (&self.m[i] / bc1) / ((&self.v[i] / bc2).sqrt() + EPS) * lr;
                match &mut self.master[i] {
                    Some(w) => {
                        let _ = w.g_sub_(&update);
                        p.copy_(&w.to_device(p.device()).to_kind(p.kind()));
                    }
                    None => {
                        let _ = p.g_sub_(&update.to_device(p.device()));
                    }
                }
                p.zero_grad();
            }
            norm
        })
    }
}

/// `src` into `dst` when it has as many values.
fn copy_values(dst: &mut Tensor, src: &[f32]) {
    if src.len() as i64 == dst.numel() as i64 {
        let t = Tensor::from_slice(src)
            .view(dst.size().as_slice())
            .to_device(dst.device());
        dst.copy_(&t);
    }
}

/// The learning rate for an update (1-based) under the schedule.
pub fn learning_rate(config: &Config, update: u64) -> f64 {
    match config.optimizer.schedule {
        Schedule::Constant => config.optimizer.lr,
        Schedule::Linear => {
            let frac = 1.0 - (update.saturating_sub(1)) as f64 / config.stop.updates as f64;
            config.optimizer.lr * frac.max(0.0)
        }
    }
}

/// Per-step results of an update, for recording.
pub struct StepOutcome {
    /// Per segment, per step: the advantage (None when dropped) and the lag.
    pub advantages: Vec<Vec<Option<f32>>>,
    pub lags: Vec<Vec<u64>>,
}

/// What an update measured.
#[derive(Clone, Debug, Default)]
pub struct UpdateStats {
    pub policy_loss: f64,
    pub value_loss: f64,
    pub entropy: f64,
    pub approx_kl: f64,
    pub clip_fraction: f64,
    pub grad_norm: f64,
    pub samples: usize,
    pub dropped: usize,
    pub lag_mean: f64,
    pub lag_max: u64,
}

/// Trains on a batch. `version` is the learner's policy version before this
/// update; steps older than `max_policy_lag` versions are dropped.
pub fn update(
    config: &Config,
    policy: &mut Policy,
    adam: &mut Adam,
    rng: &mut Rng,
    batch: &[Segment],
    version: u64,
    lr: f64,
) -> (UpdateStats, StepOutcome) {
    let alg = &config.algorithm;
    let d = policy.spec.obs_dim;
    let ad = policy.spec.head.action_dim();
    let device = policy.device;
    let mut stats = UpdateStats::default();
    let n: usize = batch.iter().map(Segment::len).sum();
    let lags: Vec<Vec<u64>> = batch
        .iter()
        .map(|s| {
            s.versions
                .iter()
                .map(|&v| version.saturating_sub(v))
                .collect()
        })
        .collect();
    let empty = StepOutcome {
        advantages: batch.iter().map(|s| vec![None; s.len()]).collect(),
        lags: lags.clone(),
    };
    if n == 0 {
        return (stats, empty);
    }
    // Flatten the batch.
    let mut obs = Vec::with_capacity(n * d);
    let mut acts = Vec::with_capacity(n * ad);
    let mut behaviour = Vec::with_capacity(n);
    for s in batch {
        obs.extend_from_slice(&s.features);
        acts.extend_from_slice(&s.actions);
        behaviour.extend_from_slice(&s.log_probs);
    }
    let obs_t = Tensor::from_slice(&obs)
        .view([n as i64, d as i64])
        .to_device(device);
    let act_t = Tensor::from_slice(&acts)
        .view([n as i64, ad as i64])
        .to_device(device);
    let behaviour_t = Tensor::from_slice(&behaviour).to_device(device);
    // The proximal policy (the learner's, before this update) and its values.
    let (prox_logp, values_now) = tch::no_grad(|| {
        let out = policy.forward(&obs_t);
        (policy.log_prob(&out, &act_t), out.value)
    });
    let values_now = Vec::<f32>::try_from(&values_now.to_device(Device::Cpu)).unwrap_or_default();
    // Bootstrap values for segments that did not terminate.
    let boots: Vec<f32> = {
        let next: Vec<f32> = batch
            .iter()
            .flat_map(|s| s.next_features.clone().unwrap_or_else(|| vec![0.0; d]))
            .collect();
        let v = tch::no_grad(|| {
            policy
                .forward(
                    &Tensor::from_slice(&next)
                        .view([batch.len() as i64, d as i64])
                        .to_device(device),
                )
                .value
        });
        let v = Vec::<f32>::try_from(&v.to_device(Device::Cpu)).unwrap_or_default();
        batch
            .iter()
            .zip(v)
            .map(|(s, v)| {
                if s.next_features.is_some() && alg.value_loss {
                    v
                } else {
                    0.0
                }
            })
            .collect()
    };
    // Advantages and value targets per segment.
    let mut adv = Vec::with_capacity(n);
    let mut targets = Vec::with_capacity(n);
    let mut offset = 0;
    let group_adv: BTreeMap<(usize, usize, u64), f32> = if alg.advantage == AdvantageKind::Group {
        let mut groups: BTreeMap<(usize, usize, u64), Vec<(usize, f64)>> = BTreeMap::new();
        for (i, s) in batch.iter().enumerate() {
            let ret: f64 = s.rewards.iter().map(|&r| f64::from(r)).sum();
            groups
                .entry((s.sampler, s.group, s.counter))
                .or_default()
                .push((i, ret));
        }
        let mut out = BTreeMap::new();
        for members in groups.values() {
            let rets: Vec<f64> = members.iter().map(|m| m.1).collect();
            for (&(i, _), a) in members.iter().zip(advantage::group_relative(&rets)) {
                let s = &batch[i];
                out.insert((s.sampler, s.slot, s.counter), a);
            }
        }
        out
    } else {
        BTreeMap::new()
    };
    for (si, s) in batch.iter().enumerate() {
        let vals = &values_now[offset..offset + s.len()];
        match alg.advantage {
            AdvantageKind::Gae => {
                let (a, t) = advantage::gae(&s.rewards, vals, boots[si], alg.gamma, alg.lambda);
                adv.extend(a);
                targets.extend(t);
            }
            AdvantageKind::MonteCarlo => {
                let g = advantage::returns_to_go(&s.rewards, boots[si], alg.gamma);
                if alg.value_loss {
                    adv.extend(g.iter().zip(vals).map(|(g, v)| g - v));
                } else {
                    adv.extend(g.iter().copied());
                }
                targets.extend(g);
            }
            AdvantageKind::Group => {
                let a = group_adv
                    .get(&(s.sampler, s.slot, s.counter))
                    .copied()
                    .unwrap_or(0.0);
                adv.extend(std::iter::repeat_n(a, s.len()));
                targets.extend(advantage::returns_to_go(&s.rewards, boots[si], alg.gamma));
            }
        }
        offset += s.len();
    }
    // Drop steps older than the lag bound.
    let flat_lags: Vec<u64> = lags.iter().flatten().copied().collect();
    let keep: Vec<i64> = (0..n as i64)
        .filter(|&i| flat_lags[i as usize] <= config.sampling.max_policy_lag)
        .collect();
    stats.dropped = n - keep.len();
    stats.samples = keep.len();
    if !keep.is_empty() {
        stats.lag_mean = keep
            .iter()
            .map(|&i| flat_lags[i as usize] as f64)
            .sum::<f64>()
            / keep.len() as f64;
        stats.lag_max = keep
            .iter()
            .map(|&i| flat_lags[i as usize])
            .max()
            .unwrap_or(0);
    }
    if alg.normalize_advantages {
        let mut kept: Vec<f32> = keep.iter().map(|&i| adv[i as usize]).collect();
        advantage::normalize(&mut kept);
        for (&i, a) in keep.iter().zip(kept) {
            adv[i as usize] = a;
        }
    }
    // Per-step weights for GRPO's per-episode averaging.
    let mut seq_w = Vec::with_capacity(n);
    let mean_len = n as f64 / batch.len() as f64;
    for s in batch {
        let w = if alg.policy_loss == PolicyLossKind::Grpo {
            (mean_len / s.len().max(1) as f64) as f32
        } else {
            1.0
        };
        seq_w.extend(std::iter::repeat_n(w, s.len()));
    }
    let mut outcome = StepOutcome {
        advantages: Vec::with_capacity(batch.len()),
        lags,
    };
    {
        let mut i = 0;
        for s in batch {
            outcome.advantages.push(
                (0..s.len())
                    .map(|k| {
                        (flat_lags[i + k] <= config.sampling.max_policy_lag).then_some(adv[i + k])
                    })
                    .collect(),
            );
            i += s.len();
        }
    }
    if keep.is_empty() {
        return (stats, outcome);
    }
    let adv_t = Tensor::from_slice(&adv).to_device(device);
    let target_t = Tensor::from_slice(&targets).to_device(device);
    let seq_t = Tensor::from_slice(&seq_w).to_device(device);
    // Truncated importance weights between the proximal and the behaviour policy.
    let is_w = (&prox_logp - &behaviour_t)
        .exp()
        .clamp_max(alg.ratio_truncation)
        .detach();
    let mut order: Vec<i64> = keep.clone();
    let mb = order.len().div_ceil(alg.minibatches);
    let mut count = 0f64;
    for _ in 0..alg.epochs {
        rng.shuffle(&mut order);
        for chunk in order.chunks(mb.max(1)) {
            let idx = Tensor::from_slice(chunk).to_device(device);
            let o = obs_t.index_select(0, &idx);
            let a = act_t.index_select(0, &idx);
            let out: Out = policy.forward(&o);
            let logp = policy.log_prob(&out, &a);
            let old = prox_logp.index_select(0, &idx);
            let log_ratio = &logp - &old;
            let ratio = log_ratio.exp();
            let advs = adv_t.index_select(0, &idx);
            let w = is_w.index_select(0, &idx) * seq_t.index_select(0, &idx);
            let c = alg.clip;
            let pg = match alg.policy_loss {
                PolicyLossKind::Ppo | PolicyLossKind::Grpo => {
                    let s1 = &ratio * &advs;
                    let s2 = ratio.clamp(1.0 - c, 1.0 + c) * &advs;
                    -(s1.minimum(&s2) * &w).mean(Kind::Float)
                }
                PolicyLossKind::Reinforce => -(&ratio * &advs * &w).mean(Kind::Float),
            };
            let entropy = policy.entropy(&out).mean(Kind::Float);
            let mut loss = &pg - &entropy * alg.entropy_coef;
            let vloss = if alg.value_loss {
                let t = target_t.index_select(0, &idx);
                let vl = (&out.value - t).square().mean(Kind::Float) * 0.5;
                loss += &vl * alg.value_coef;
                vl.double_value(&[])
            } else {
                0.0
            };
            // k3 estimator of KL(current || proximal).
            let kl = ((-&log_ratio).exp() - 1.0 + &log_ratio).mean(Kind::Float);
            if alg.kl_coef > 0.0 {
                loss += &kl * alg.kl_coef;
            }
            loss.backward();
            stats.grad_norm += adam.step(&mut policy.params, lr, config.optimizer.max_grad_norm);
            tch::no_grad(|| {
                stats.policy_loss += pg.double_value(&[]);
                stats.value_loss += vloss;
                stats.entropy += entropy.double_value(&[]);
                stats.approx_kl += ((&ratio - 1.0) - &log_ratio)
                    .mean(Kind::Float)
                    .double_value(&[]);
                stats.clip_fraction += (&ratio - 1.0)
                    .abs()
                    .gt(c)
                    .to_kind(Kind::Float)
                    .mean(Kind::Float)
                    .double_value(&[]);
            });
            count += 1.0;
        }
    }
    for x in [
        &mut stats.policy_loss,
        &mut stats.value_loss,
        &mut stats.entropy,
        &mut stats.approx_kl,
        &mut stats.clip_fraction,
        &mut stats.grad_norm,
    ] {
        *x /= count.max(1.0);
    }
    (stats, outcome)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AdvantageKind, test_config};
    use crate::policy::{Head, Spec};

    fn spec() -> Spec {
        Spec::mlp(vec![(0.0, 1.0); 2], Head::Discrete { n: 2 }, vec![16])
    }

    /// One-step episodes where action 0 pays 1 and action 1 pays 0.
    fn batch(policy: &Policy, rng: &mut Rng, version: u64, n: usize) -> Vec<Segment> {
        (0..n)
            .map(|i| {
                let features = vec![rng.normal() as f32, rng.normal() as f32];
                let s = policy.act(&features, 1, rng).remove(0);
                let reward = if s.action[0] == 0.0 { 1.0 } else { 0.0 };
                Segment {
                    sampler: 0,
                    slot: i % 8,
                    counter: (i / 8) as u64,
                    group: 0,
                    seed: 0,
                    task: String::new(),
                    first_step: 0,
                    features,
                    actions: s.action,
                    log_probs: vec![s.log_prob],
                    values: vec![s.value],
                    rewards: vec![reward],
                    versions: vec![version],
                    next_features: None,
                    end: None,
                    frames: Vec::new(),
                    step_ns: Vec::new(),
                }
            })
            .collect()
    }

    fn p_action0(policy: &Policy) -> f32 {
        let lp = policy.log_probs_of(&[0.3, -0.2], &[0.0]);
        lp[0].exp()
    }

    fn improves(edit: impl Fn(&mut Config)) {
        let mut config = test_config();
        edit(&mut config);
        let mut policy = Policy::new(spec(), 1, Device::Cpu);
        let mut adam = Adam::new(&policy.params);
        let mut rng = Rng::new(2);
        let before = p_action0(&policy);
        for v in 0..15 {
            let b = batch(&policy, &mut rng, v, 64);
            let (stats, _) = update(&config, &mut policy, &mut adam, &mut rng, &b, v, 0.01);
            assert!(stats.policy_loss.is_finite() && stats.entropy.is_finite());
        }
        let after = p_action0(&policy);
        assert!(after > before + 0.2, "p(good action) {before} -> {after}");
    }

    #[test]
    fn ppo_with_gae_learns_the_paying_action() {
        improves(|_| {});
    }

    #[test]
    fn reinforce_with_monte_carlo_learns_the_paying_action() {
        improves(|c| {
            c.algorithm.advantage = AdvantageKind::MonteCarlo;
            c.algorithm.policy_loss = PolicyLossKind::Reinforce;
            c.algorithm.value_loss = false;
        });
    }

    #[test]
    fn grpo_with_groups_learns_the_paying_action() {
        improves(|c| {
            c.algorithm.advantage = AdvantageKind::Group;
            c.algorithm.group_size = 8;
            c.algorithm.policy_loss = PolicyLossKind::Grpo;
            c.algorithm.value_loss = false;
            c.algorithm.kl_coef = 0.01;
        });
    }

    #[test]
    fn steps_older_than_the_lag_bound_are_dropped() {
        let mut config = test_config();
        config.sampling.max_policy_lag = 1;
        let mut policy = Policy::new(spec(), 1, Device::Cpu);
        let mut adam = Adam::new(&policy.params);
        let mut rng = Rng::new(3);
        let mut b = batch(&policy, &mut rng, 5, 16);
        b.extend(batch(&policy, &mut rng, 3, 16));
        let before = policy.values();
        let (stats, out) = update(&config, &mut policy, &mut adam, &mut rng, &b, 6, 0.01);
        assert_eq!((stats.samples, stats.dropped, stats.lag_max), (16, 16, 1));
        assert!(out.advantages[..16].iter().all(|a| a[0].is_some()));
        assert!(out.advantages[16..].iter().all(|a| a[0].is_none()));
        assert_eq!(out.lags[20][0], 3);
        assert_ne!(before, policy.values(), "the fresh half was trained on");
        // All too old: nothing is trained on, the policy stays.
        let old = batch(&policy, &mut rng, 0, 8);
        let before = policy.values();
        let (stats, _) = update(&config, &mut policy, &mut adam, &mut rng, &old, 6, 0.01);
        assert_eq!(stats.samples, 0);
        assert_eq!(before, policy.values());
    }

    #[test]
    fn bf16_gradients_add_up_in_f32_over_micro_batches() {
        // Two micro-batches' gradients, 1 and 1/1024: in bf16 (8 bits of
        // mantissa) their sum rounds back to 1; in f32 it does not.
        let weight = || {
            Tensor::from_slice(&[0.5f32])
                .to_kind(Kind::BFloat16)
                .set_requires_grad(true)
        };
        let norm = |accumulate: bool| {
            let mut params = vec![weight()];
            let mut adam = Adam::new(&params);
            for g in [1.0, 1.0 / 1024.0] {
                (&params[0] * g).sum(Kind::Float).backward();
                if accumulate && g == 1.0 {
                    adam.accumulate(&mut params);
                }
            }
            adam.step(&mut params, 0.01, 0.0)
        };
        assert_eq!(norm(false), 1.0, "bf16 drops the second gradient");
        assert_eq!(norm(true), 1.0 + 1.0 / 1024.0);
        // The sums are taken by the step: the next one starts from zero.
        let mut params = vec![weight()];
        let mut adam = Adam::new(&params);
        for _ in 0..2 {
            for _ in 0..2 {
                (&params[0] * 0.5).sum(Kind::Float).backward();
                adam.accumulate(&mut params);
            }
            assert_eq!(adam.step(&mut params, 0.01, 0.0), 1.0);
        }
    }

    #[test]
    fn linear_schedule_decays_to_zero() {
        let mut config = test_config();
        config.optimizer.schedule = Schedule::Linear;
        config.stop.updates = 4;
        let lrs: Vec<f64> = (1..=4).map(|u| learning_rate(&config, u)).collect();
        assert_eq!(lrs, vec![0.001, 0.00075, 0.0005, 0.00025]);
    }
}
