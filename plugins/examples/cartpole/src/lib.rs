//! CartPole as a ludus env plugin: the classic physics, so returns compare with
//! Gymnasium's CartPole-v1. Observation: one vector part `state` =
//! [x, x_dot, theta, theta_dot]; actions: discrete(2), 0 pushes left, 1 right.
//! Reward 1 per step; truncated after 500 steps, which counts as success.

pub mod physics;

use ludus_sdk::*;
use physics::CartPole;

pub struct CartPoleEnv {
    sim: CartPole,
    rng: Rng,
}

impl Env for CartPoleEnv {
    fn init(config: &str) -> Result<(Self, EnvInfo), String> {
        if let Some((key, _)) = parse_config(config)?.into_iter().next() {
            return Err(format!("cartpole takes no config (got key `{key}`)"));
        }
        let high = [
            (physics::X_THRESHOLD * 2.0) as f32,
            f32::MAX,
            (physics::THETA_THRESHOLD * 2.0) as f32,
            f32::MAX,
        ];
        let info = EnvInfo {
            name: "cartpole".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Balance a pole on a cart (Gymnasium CartPole-v1 physics).".into(),
            observation_space: vec![NamedSpace {
                name: "state".into(),
                space: PartSpace::Box(BoxSpace {
                    shape: vec![4],
                    low: high.iter().map(|h| -h).collect(),
                    high: high.to_vec(),
                }),
            }],
            action_space: ActionSpace {
                discrete: Some(2),
                continuous: None,
                pointer: None,
                text: None,
                keys: None,
                element: false,
            },
            max_steps: physics::MAX_STEPS,
            vector_size: 4,
        };
        Ok((
            CartPoleEnv {
                sim: CartPole::default(),
                rng: Rng::new(0),
            },
            info,
        ))
    }

    fn reset(&mut self, seed: u64) -> ResetResult {
        self.start(seed);
        ResetResult {
            observation: self.observation(),
            task: "Keep the pole upright for 500 steps.".into(),
            info: "{}".into(),
        }
    }

    fn step(&mut self, action: &Action) -> StepResult {
        let (reward, terminated, truncated) = self.sim.step(push_right(action));
        StepResult {
            observation: self.observation(),
            reward,
            terminated,
            truncated,
            info: if truncated {
                success_info(true)
            } else {
                String::new()
            },
        }
    }

    // The batched interface steps copies through these: no observation is
    // built, the state goes straight into the flat result.
    fn reset_flat(&mut self, seed: u64, out: &mut [f32]) {
        self.start(seed);
        self.observe_flat(out);
    }

    fn step_flat(&mut self, action: &Action, out: &mut [f32]) -> (f32, bool, bool) {
        let stepped = self.sim.step(push_right(action));
        self.observe_flat(out);
        stepped
    }

    // Two copies in lock-step: half the float operations (see physics.rs).
    fn step_flat_pair(
        a: &mut Self,
        b: &mut Self,
        actions: [&Action; 2],
        out: [&mut [f32]; 2],
    ) -> [(f32, bool, bool); 2] {
        let pushes = [push_right(actions[0]), push_right(actions[1])];
        let stepped = CartPole::step_pair(&mut a.sim, &mut b.sim, pushes);
        let [out_a, out_b] = out;
        a.observe_flat(out_a);
        b.observe_flat(out_b);
        stepped
    }
}

fn push_right(action: &Action) -> bool {
    match action {
        Action::Discrete(a) => *a == 1,
        Action::Continuous(v) => v.first().is_some_and(|f| *f > 0.0),
        _ => false,
    }
}

impl CartPoleEnv {
    fn start(&mut self, seed: u64) {
        self.rng = Rng::new(seed);
        let u = [
            self.rng.next_f64(),
            self.rng.next_f64(),
            self.rng.next_f64(),
            self.rng.next_f64(),
        ];
        self.sim.reset(u);
    }

    fn observe_flat(&self, out: &mut [f32]) {
        let mut o = [0.0f32; 4];
        self.sim.observe(&mut o);
        for (slot, v) in out.iter_mut().zip(o) {
            *slot = v;
        }
    }

    fn observation(&self) -> Observation {
        let mut o = [0.0f32; 4];
        self.sim.observe(&mut o);
        vector_observation("state", o.to_vec())
    }
}

export_env!(CartPoleEnv);

#[cfg(test)]
mod tests {
    use super::physics::sin_cos;

    /// Where `sin_cos` runs musl's kernels itself (elsewhere it calls the
    /// libm it is linked with: musl's in a plugin, the system's natively).
    fn in_kernel(x: f64) -> bool {
        let high = ((x.to_bits() >> 32) as u32) & 0x7fff_ffff;
        (0x3e50_0000..=0x3fe9_21fb).contains(&high)
    }

    fn assert_same_bits(x: f64) {
        let (s, c) = sin_cos(x);
        let (ls, lc) = if in_kernel(x) {
            (libm::sin(x), libm::cos(x))
        } else {
            (x.sin(), x.cos())
        };
        assert!(
            s.to_bits() == ls.to_bits() || s.is_nan() && ls.is_nan(),
            "sin({x:e})"
        );
        assert!(
            c.to_bits() == lc.to_bits() || c.is_nan() && lc.is_nan(),
            "cos({x:e})"
        );
    }

    /// Two poles stepped together end where each would alone: states in and
    /// out of the kernels' range, pushes both ways, terminations included.
    /// (Natively `F2` is a pair of scalars; the wasm build's simd128 lanes
    /// are checked against `step` by the arena's batched-CartPole test.)
    #[test]
    fn step_pair_is_step_twice() {
        use super::physics::CartPole;
        let mut state = 0xCA27_u64;
        let mut draw = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        for i in 0..100_000 {
            let mut pole = || CartPole {
                state: [
                    (draw() - 0.5) * 5.0,
                    (draw() - 0.5) * 4.0,
                    (draw() - 0.5) * if i % 10 == 0 { 3.0 } else { 0.45 },
                    (draw() - 0.5) * 4.0,
                ],
                steps: (draw() * 500.0) as u32,
            };
            let (mut a, mut b) = (pole(), pole());
            let (mut a1, mut b1) = (a.clone(), b.clone());
            let pushes = [draw() < 0.5, draw() < 0.5];
            let together = CartPole::step_pair(&mut a, &mut b, pushes);
            let alone = [a1.step(pushes[0]), b1.step(pushes[1])];
            assert_eq!(together, alone, "draw {i}");
            assert_eq!(
                a.state.map(f64::to_bits),
                a1.state.map(f64::to_bits),
                "draw {i}"
            );
            assert_eq!(
                b.state.map(f64::to_bits),
                b1.state.map(f64::to_bits),
                "draw {i}"
            );
            assert_eq!((a.steps, b.steps), (a1.steps, b1.steps));
        }
    }

    /// The inlined kernels return musl's bits (what a wasm32-wasip2 plugin's
    /// libm returns) across the pole's range and at the edges where musl
    /// switches paths; outside them `sin_cos` is the libm's own answer.
    #[test]
    fn sin_cos_is_musl_bit_for_bit() {
        let mut state = 0x5EEDu64;
        let mut kernel = 0;
        for _ in 0..2_000_000 {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let u = (state >> 11) as f64 / (1u64 << 53) as f64;
            for x in [(u - 0.5) * 1.6, (u - 0.5) * 0.5, (u - 0.5) * 1e-6] {
                kernel += usize::from(in_kernel(x));
                assert_same_bits(x);
            }
        }
        assert!(kernel > 5_000_000, "{kernel} draws took the kernels");
        for high in [0x3e46_a09e_u64, 0x3e50_0000, 0x3fe9_21fb, 0x3fe9_21fc] {
            for low in [0u64, 1, 0x5444_2d18, 0xffff_ffff] {
                let x = f64::from_bits((high << 32) | low);
                for x in [x, -x, x.next_up(), x.next_down()] {
                    assert_same_bits(x);
                }
            }
        }
        for x in [0.0, -0.0, 1e-300, 3.0, -100.0, f64::INFINITY, f64::NAN] {
            assert_same_bits(x);
        }
    }
}
