use crate::bindings::exports::ludus::plugin::env_vector::{Values8, VectorStep};
use crate::bindings::exports::ludus::plugin::env_vector_packed::PackedStep;
use crate::{Action, BatchResult, EnvInfo, ResetResult, StepResult, util};

/// The widest observation, and the widest action, `step-vector` carries.
const VECTOR_STEP_VALUES: usize = 8;

/// An environment. Write one environment; the SDK derives the batched
/// interface (many copies stepped per call) from it.
pub trait Env: Sized + 'static {
    /// Builds the environment from its config string and describes it.
    fn init(config: &str) -> Result<(Self, EnvInfo), String>;
    /// Starts a new episode.
    fn reset(&mut self, seed: u64) -> ResetResult;
    /// Applies one action.
    fn step(&mut self, action: &Action) -> StepResult;

    /// The batched interface's fast path (optional): starts a new episode and
    /// writes its observation's flat vector (`vector_size` values) into `out`.
    /// The default calls [`Env::reset`] and flattens its vector parts;
    /// override it (with [`Env::step_flat`]) to step copies without building an
    /// `Observation` per step. It must write what `reset` would observe.
    fn reset_flat(&mut self, seed: u64, out: &mut [f32]) {
        let reset = self.reset(seed);
        write_vector(out, &reset.observation);
    }

    /// The batched interface's fast path (optional): applies one action,
    /// writes the next observation's flat vector into `out` and returns
    /// `(reward, terminated, truncated)`. The default calls [`Env::step`];
    /// an override must agree with it. It also serves `step-vector`, the
    /// single-copy step without allocations, where `vector_size` is at most 8.
    fn step_flat(&mut self, action: &Action, out: &mut [f32]) -> (f32, bool, bool) {
        let step = self.step(action);
        write_vector(out, &step.observation);
        (step.reward, step.terminated, step.truncated)
    }

    /// The batched interface's widest fast path (optional): steps two copies
    /// at once, each exactly as [`Env::step_flat`] would (say, in lock-step
    /// with SIMD). `batch-step` hands copies over in pairs. The default steps
    /// one, then the other.
    /// The tools the environment offers a model-driven agent (contract
    /// 0.1.3; none by default), asked once after `init`. An agent calls one
    /// by acting with `type-text` holding the call as JSON: read it with
    /// [`crate::tools::parse_tool_call`] in `step`, and answer in the next
    /// observation.
    fn tools(&self) -> Vec<crate::tools::Tool> {
        Vec::new()
    }

    fn step_flat_pair(
        a: &mut Self,
        b: &mut Self,
        actions: [&Action; 2],
        out: [&mut [f32]; 2],
    ) -> [(f32, bool, bool); 2] {
        let [out_a, out_b] = out;
        [
            a.step_flat(actions[0], out_a),
            b.step_flat(actions[1], out_b),
        ]
    }
}

struct Copy<E> {
    env: E,
    seed: u64,
    steps: u32,
}

/// Plugin state behind the export macro.
#[doc(hidden)]
pub struct EnvState<E: Env> {
    config: Option<String>,
    info: Option<EnvInfo>,
    env: Option<E>,
    batch: Vec<Copy<E>>,
    /// Set by `init`: how `step-vector` reads actions and writes observations,
    /// or `None` where the environment is too wide for it.
    vector: Option<VectorShape>,
}

/// An environment's flat layout: `size` observation values, actions of
/// `width` values (discrete ones as their index).
#[derive(Clone, Copy)]
struct VectorShape {
    size: usize,
    discrete: bool,
    width: usize,
}

impl VectorShape {
    fn of(info: &EnvInfo) -> VectorShape {
        let discrete = info.action_space.discrete.is_some();
        let width = if discrete {
            1
        } else {
            info.action_space
                .continuous
                .as_ref()
                .map_or(1, |b| b.low.len().max(1))
        };
        VectorShape {
            size: info.vector_size as usize,
            discrete,
            width,
        }
    }
}

impl<E: Env> Default for EnvState<E> {
    fn default() -> Self {
        EnvState {
            config: None,
            info: None,
            env: None,
            batch: Vec::new(),
            vector: None,
        }
    }
}

impl<E: Env> EnvState<E> {
    pub fn init(&mut self, config: String) -> Result<EnvInfo, String> {
        let (env, info) = E::init(&config)?;
        let shape = VectorShape::of(&info);
        self.vector = (shape.size > 0
            && shape.size <= VECTOR_STEP_VALUES
            && shape.width <= VECTOR_STEP_VALUES)
            .then_some(shape);
        self.env = Some(env);
        self.info = Some(info.clone());
        self.config = Some(config);
        Ok(info)
    }

    pub fn tools(&mut self) -> Vec<crate::tools::Tool> {
        self.env.as_ref().map(|e| e.tools()).unwrap_or_default()
    }

    fn env(&mut self) -> &mut E {
        match self.env.as_mut() {
            Some(e) => e,
            None => panic!("the host called the environment before `init`"),
        }
    }

    pub fn reset(&mut self, seed: u64) -> ResetResult {
        self.env().reset(seed)
    }

    pub fn step(&mut self, action: Action) -> StepResult {
        self.env().step(&action)
    }

    /// `env-vector-packed.reset-packed`: [`Env::reset_flat`] on the single
    /// instance, packed.
    pub fn reset_packed(&mut self, seed: u64) -> PackedStep {
        let (Some(shape), Some(env)) = (self.vector, self.env.as_mut()) else {
            return DECLINED;
        };
        let mut out = [0.0f32; VECTOR_STEP_VALUES];
        env.reset_flat(seed, &mut out[..shape.size.min(VECTOR_STEP_VALUES)]);
        pack(&out, 0.0, 0)
    }

    /// `env-vector-packed.step-packed`: [`Self::step_vector`], packed.
    pub fn step_packed(&mut self, action: Values8) -> PackedStep {
        match self.step_vector(action) {
            Some(VectorStep {
                observation: (o0, o1, o2, o3, o4, o5, o6, o7),
                reward,
                flags,
            }) => pack(&[o0, o1, o2, o3, o4, o5, o6, o7], reward, flags),
            None => DECLINED,
        }
    }

    /// `env-vector.step-vector`: [`Env::step_flat`] on the single instance,
    /// into a fixed-size result.
    pub fn step_vector(&mut self, action: Values8) -> Option<VectorStep> {
        let shape = self.vector?;
        // `vector` is set by `init`, together with `env`.
        let env = self.env.as_mut()?;
        let (a0, a1, a2, a3, a4, a5, a6, a7) = action;
        let values = [a0, a1, a2, a3, a4, a5, a6, a7];
        let action = action_from_flat(
            &values[..shape.width.min(VECTOR_STEP_VALUES)],
            shape.discrete,
        );
        let mut out = [0.0f32; VECTOR_STEP_VALUES];
        let (reward, terminated, truncated) =
            env.step_flat(&action, &mut out[..shape.size.min(VECTOR_STEP_VALUES)]);
        let [o0, o1, o2, o3, o4, o5, o6, o7] = out;
        Some(VectorStep {
            observation: (o0, o1, o2, o3, o4, o5, o6, o7),
            reward,
            flags: u8::from(terminated) | (u8::from(truncated) << 1),
        })
    }

    fn vector_size(&self) -> Result<usize, String> {
        match &self.info {
            Some(info) if info.vector_size > 0 => Ok(info.vector_size as usize),
            Some(info) => Err(format!(
                "environment `{}` has no single-vector observation, so it cannot be batched",
                info.name
            )),
            None => Err("the host called batch-reset before `init`".to_string()),
        }
    }

    pub fn batch_reset(&mut self, seeds: Vec<u64>) -> Result<Vec<f32>, String> {
        let size = self.vector_size()?;
        let config = self.config.clone().unwrap_or_default();
        let mut out = vec![0.0; seeds.len() * size];
        self.batch.clear();
        for (seed, slot) in seeds.into_iter().zip(out.chunks_exact_mut(size)) {
            let (mut env, _) = E::init(&config)?;
            env.reset_flat(seed, slot);
            self.batch.push(Copy {
                env,
                seed,
                steps: 0,
            });
        }
        Ok(out)
    }

    pub fn batch_step(&mut self, actions: Vec<f32>) -> Result<BatchResult, String> {
        let size = self.vector_size()?;
        let n = self.batch.len();
        let info = self.info.as_ref().ok_or("batch-step before init")?;
        let VectorShape {
            discrete, width, ..
        } = VectorShape::of(info);
        let max_steps = info.max_steps;
        if actions.len() != n * width {
            return Err(format!(
                "batch-step got {} action values for {n} copies of width {width}",
                actions.len()
            ));
        }
        // Every copy writes its observation straight into its slot of the
        // flat result: with `step_flat` overridden, no allocation per copy.
        let mut result = BatchResult {
            observations: vec![0.0; n * size],
            rewards: Vec::with_capacity(n),
            flags: Vec::with_capacity(n),
        };
        let BatchResult {
            observations,
            rewards,
            flags,
        } = &mut result;
        // What follows a copy's step: its count, the step limit, the flags,
        // and a new episode where one ended.
        let mut settle = |copy: &mut Copy<E>, (reward, terminated, truncated), slot: &mut [f32]| {
            copy.steps += 1;
            let truncated = truncated || (max_steps > 0 && copy.steps >= max_steps);
            rewards.push(reward);
            flags.push(u8::from(terminated) | (u8::from(truncated) << 1));
            if terminated || truncated {
                copy.seed = util::next_seed(copy.seed);
                copy.steps = 0;
                copy.env.reset_flat(copy.seed, slot);
            }
        };
        // Copies in pairs (`step_flat_pair`), the odd one out alone.
        let pairs = self
            .batch
            .chunks_mut(2)
            .zip(actions.chunks(2 * width))
            .zip(observations.chunks_mut(2 * size));
        for ((copies, actions), slots) in pairs {
            match copies {
                [a, b] => {
                    let (action_a, action_b) = actions.split_at(width);
                    let (slot_a, slot_b) = slots.split_at_mut(size);
                    let (action_a, action_b) = (
                        action_from_flat(action_a, discrete),
                        action_from_flat(action_b, discrete),
                    );
                    let [step_a, step_b] = E::step_flat_pair(
                        &mut a.env,
                        &mut b.env,
                        [&action_a, &action_b],
                        [&mut *slot_a, &mut *slot_b],
                    );
                    settle(a, step_a, slot_a);
                    settle(b, step_b, slot_b);
                }
                [a] => {
                    let stepped = a.env.step_flat(&action_from_flat(actions, discrete), slots);
                    settle(a, stepped, slots);
                }
                _ => unreachable!("chunks of two"),
            }
        }
        Ok(result)
    }
}

/// A `packed-step` that declines: bit 63 of word 4.
const DECLINED: PackedStep = (0, 0, 0, 0, 1 << 63);

/// The `packed-step` layout (see the WIT): two values a word, low half
/// first; then the reward's bits and the flags.
fn pack(values: &[f32; VECTOR_STEP_VALUES], reward: f32, flags: u8) -> PackedStep {
    let word = |i: usize| {
        u64::from(values[2 * i].to_bits()) | (u64::from(values[2 * i + 1].to_bits()) << 32)
    };
    (
        word(0),
        word(1),
        word(2),
        word(3),
        u64::from(reward.to_bits()) | (u64::from(flags) << 32),
    )
}

/// Decodes the flat action of the batched interface and the fast path
/// (inlined: on the fast path a call costs more than the decoding).
#[inline(always)]
fn action_from_flat(values: &[f32], discrete: bool) -> Action {
    if discrete {
        // `as` saturates: negative indices and NaN become 0.
        Action::Discrete(values.first().copied().unwrap_or(0.0) as u32)
    } else {
        Action::Continuous(values.to_vec())
    }
}

/// Writes an observation's vector parts, concatenated, into `out`: zeros
/// past their end, cut at `out`'s length (the layout stays fixed even if an
/// observation is malformed).
pub fn write_vector(out: &mut [f32], observation: &[crate::Part]) {
    let mut values = observation.iter().flat_map(|p| match &p.value {
        crate::Value::Vector(v) => v.as_slice(),
        _ => &[],
    });
    for slot in out.iter_mut() {
        *slot = values.next().copied().unwrap_or(0.0);
    }
}

/// Exports a type implementing [`Env`] as this component's environment.
#[macro_export]
macro_rules! export_env {
    ($ty:ty) => {
        const _: () = {
            struct __LudusEnv;
            ::std::thread_local! {
                static __STATE: ::std::cell::RefCell<$crate::__rt::EnvState<$ty>> =
                    ::std::cell::RefCell::new(::std::default::Default::default());
            }
            impl $crate::bindings::exports::ludus::plugin::env_plugin::Guest for __LudusEnv {
                fn init(config: String) -> Result<$crate::EnvInfo, String> {
                    __STATE.with_borrow_mut(|s| s.init(config))
                }
                fn reset(seed: u64) -> $crate::ResetResult {
                    __STATE.with_borrow_mut(|s| s.reset(seed))
                }
                fn step(action: $crate::Action) -> $crate::StepResult {
                    __STATE.with_borrow_mut(|s| s.step(action))
                }
                fn batch_reset(seeds: Vec<u64>) -> Result<Vec<f32>, String> {
                    __STATE.with_borrow_mut(|s| s.batch_reset(seeds))
                }
                fn batch_step(actions: Vec<f32>) -> Result<$crate::BatchResult, String> {
                    __STATE.with_borrow_mut(|s| s.batch_step(actions))
                }
            }
            impl $crate::bindings::exports::ludus::plugin::env_vector::Guest for __LudusEnv {
                fn step_vector(
                    action: $crate::bindings::exports::ludus::plugin::env_vector::Values8,
                ) -> Option<$crate::bindings::exports::ludus::plugin::env_vector::VectorStep>
                {
                    __STATE.with_borrow_mut(|s| s.step_vector(action))
                }
            }
            impl $crate::bindings::exports::ludus::plugin::env_vector_packed::Guest for __LudusEnv {
                fn step_packed(
                    action: $crate::bindings::exports::ludus::plugin::env_vector::Values8,
                ) -> $crate::bindings::exports::ludus::plugin::env_vector_packed::PackedStep
                {
                    __STATE.with_borrow_mut(|s| s.step_packed(action))
                }
                fn reset_packed(
                    seed: u64,
                ) -> $crate::bindings::exports::ludus::plugin::env_vector_packed::PackedStep
                {
                    __STATE.with_borrow_mut(|s| s.reset_packed(seed))
                }
            }
            impl $crate::bindings::exports::ludus::plugin::env_tools::Guest for __LudusEnv {
                fn tools() -> Vec<$crate::tools::Tool> {
                    __STATE.with_borrow_mut(|s| s.tools())
                }
            }
    $crate::bindings::__export_world!(__LudusEnv with_types_in $crate::bindings);
        };
    };
}
