//! CartPole physics, identical to Gymnasium's CartPole-v1 (Euler integration,
//! computed in f64 with Gymnasium's order of operations, observed as f32).
//! Pure code: the wasm plugin and the host's native benchmark both compile
//! this file, so both compute the same bits.
//!
//! The arithmetic is written once, generic over [`Num`]: for one pole in
//! `f64`, and for two poles at once in [`F2`] (wasm's `f64x2` where the plugin
//! is built with simd128). Every lane of an `F2` operation is the same IEEE
//! operation as the scalar one, so two poles stepped together end bit for bit
//! where each would alone, in half the operations (each also pays the
//! sandbox's NaN canonicalisation once, not twice).

use std::ops::{Add, Div, Mul, Sub};

pub const GRAVITY: f64 = 9.8;
pub const MASS_CART: f64 = 1.0;
pub const MASS_POLE: f64 = 0.1;
pub const TOTAL_MASS: f64 = MASS_CART + MASS_POLE;
pub const LENGTH: f64 = 0.5;
pub const POLE_MASS_LENGTH: f64 = MASS_POLE * LENGTH;
pub const FORCE_MAG: f64 = 10.0;
pub const TAU: f64 = 0.02;
pub const THETA_THRESHOLD: f64 = 12.0 * 2.0 * std::f64::consts::PI / 360.0;
pub const X_THRESHOLD: f64 = 2.4;
pub const MAX_STEPS: u32 = 500;

#[derive(Clone, Debug, Default)]
pub struct CartPole {
    /// x, x_dot, theta, theta_dot
    pub state: [f64; 4],
    pub steps: u32,
}

/// What the physics needs of a number: IEEE arithmetic and constants.
pub trait Num:
    Copy + Add<Output = Self> + Sub<Output = Self> + Mul<Output = Self> + Div<Output = Self>
{
    fn c(v: f64) -> Self;
}

impl Num for f64 {
    #[inline(always)]
    fn c(v: f64) -> f64 {
        v
    }
}

impl CartPole {
    /// Resets from four uniform draws in [0, 1).
    pub fn reset(&mut self, uniforms: [f64; 4]) {
        for (s, u) in self.state.iter_mut().zip(uniforms) {
            *s = -0.05 + 0.1 * u;
        }
        self.steps = 0;
    }

    /// Pushes the cart left (0) or right (1). Returns (reward, terminated, truncated).
    #[inline(always)]
    pub fn step(&mut self, push_right: bool) -> (f32, bool, bool) {
        let (sin, cos) = sin_cos(self.state[2]);
        self.state = advance(self.state, force(push_right), sin, cos);
        self.finish_step()
    }

    /// Steps `a` and `b` together, each exactly as [`CartPole::step`] would.
    pub fn step_pair(
        a: &mut CartPole,
        b: &mut CartPole,
        push_right: [bool; 2],
    ) -> [(f32, bool, bool); 2] {
        let (ta, tb) = (a.state[2], b.state[2]);
        if !in_kernel(ta) || !in_kernel(tb) {
            return [a.step(push_right[0]), b.step(push_right[1])];
        }
        let (sin, cos) = kernels(F2::new(ta, tb));
        let lanes = |i: usize| F2::new(a.state[i], b.state[i]);
        let force = F2::new(force(push_right[0]), force(push_right[1]));
        let next = advance([lanes(0), lanes(1), lanes(2), lanes(3)], force, sin, cos);
        for (i, v) in next.iter().enumerate() {
            [a.state[i], b.state[i]] = v.lanes();
        }
        [a.finish_step(), b.finish_step()]
    }

    fn finish_step(&mut self) -> (f32, bool, bool) {
        self.steps += 1;
        let [x, _, theta, _] = self.state;
        let terminated = !(-X_THRESHOLD..=X_THRESHOLD).contains(&x)
            || !(-THETA_THRESHOLD..=THETA_THRESHOLD).contains(&theta);
        let truncated = !terminated && self.steps >= MAX_STEPS;
        (1.0, terminated, truncated)
    }

    pub fn observe(&self, out: &mut [f32; 4]) {
        for (o, s) in out.iter_mut().zip(self.state) {
            *o = s as f32;
        }
    }
}

fn force(push_right: bool) -> f64 {
    if push_right { FORCE_MAG } else { -FORCE_MAG }
}

/// One Euler step of [x, x_dot, theta, theta_dot] under `force`, given
/// theta's sine and cosine.
#[inline(always)]
fn advance<T: Num>(state: [T; 4], force: T, sin: T, cos: T) -> [T; 4] {
    let [x, x_dot, theta, theta_dot] = state;
    let c = T::c;
    // Grouped as Gymnasium writes it (`np.square(theta_dot)`,
    // `np.square(costheta)`): the squares round first.
    let temp = (force + c(POLE_MASS_LENGTH) * (theta_dot * theta_dot) * sin) / c(TOTAL_MASS);
    let theta_acc = (c(GRAVITY) * sin - cos * temp)
        / (c(LENGTH) * (c(4.0 / 3.0) - c(MASS_POLE) * (cos * cos) / c(TOTAL_MASS)));
    let x_acc = temp - c(POLE_MASS_LENGTH) * theta_acc * cos / c(TOTAL_MASS);
    [
        x + c(TAU) * x_dot,
        x_dot + c(TAU) * x_acc,
        theta + c(TAU) * theta_dot,
        theta_dot + c(TAU) * theta_acc,
    ]
}

/// `(sin x, cos x)`. While the pole is up (|theta| is at most 12 degrees plus
/// one step) this is the polynomial kernel of musl's `sin` and `cos`, the very
/// operations in the same order, so it returns the same bits as the libm a
/// wasm32-wasip2 plugin links; inlined, it spares the plugin four calls per
/// step (each pays its fuel and interrupt checks) and shares `x * x`. Past
/// pi/4, and for the tiny arguments musl treats apart, it calls the libm.
#[inline(always)]
pub fn sin_cos(x: f64) -> (f64, f64) {
    if in_kernel(x) {
        kernels(x)
    } else {
        (x.sin(), x.cos())
    }
}

/// Whether musl computes `sin x` and `cos x` by the kernels alone: |x| <~
/// pi/4, and not below 2^-26 (sin) or 2^-27 * sqrt 2 (cos), where it returns
/// x and 1 without them.
#[inline(always)]
fn in_kernel(x: f64) -> bool {
    let high = ((x.to_bits() >> 32) as u32) & 0x7fff_ffff;
    (0x3e50_0000..=0x3fe9_21fb).contains(&high)
}

/// musl's `__sin(x, 0, 0)` and `__cos(x, 0)`, with its coefficients given
/// by their bits.
#[inline(always)]
fn kernels<T: Num>(x: T) -> (T, T) {
    let c = T::c;
    const S1: f64 = f64::from_bits(0xbfc5_5555_5555_5549);
    const S2: f64 = f64::from_bits(0x3f81_1111_1110_f8a6);
    const S3: f64 = f64::from_bits(0xbf2a_01a0_19c1_61d5);
    const S4: f64 = f64::from_bits(0x3ec7_1de3_57b1_fe7d);
    const S5: f64 = f64::from_bits(0xbe5a_e5e6_8a2b_9ceb);
    const S6: f64 = f64::from_bits(0x3de5_d93a_5acf_d57c);
    const C1: f64 = f64::from_bits(0x3fa5_5555_5555_554c);
    const C2: f64 = f64::from_bits(0xbf56_c16c_16c1_5177);
    const C3: f64 = f64::from_bits(0x3efa_01a0_19cb_1590);
    const C4: f64 = f64::from_bits(0xbe92_7e4f_809c_52ad);
    const C5: f64 = f64::from_bits(0x3e21_ee9e_bdb4_b1c4);
    const C6: f64 = f64::from_bits(0xbda8_fae9_be88_38d4);
    let z = x * x;
    let w = z * z;
    let r = c(S2) + z * (c(S3) + z * c(S4)) + z * w * (c(S5) + z * c(S6));
    let v = z * x;
    let sin = x + v * (c(S1) + z * r);
    // `__cos`'s last term `z*r - x*y` is `z*r` with y = 0 (z*r is not zero
    // in the kernels' range, so not even the sign of a zero differs).
    let r = z * (c(C1) + z * (c(C2) + z * c(C3))) + w * w * (c(C4) + z * (c(C5) + z * c(C6)));
    let hz = c(0.5) * z;
    let w = c(1.0) - hz;
    let cos = w + (((c(1.0) - w) - hz) + z * r);
    (sin, cos)
}

/// Two `f64` lanes, each operation the same IEEE operation on both.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
#[derive(Clone, Copy)]
pub struct F2(std::arch::wasm32::v128);

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod lanes {
    use super::{F2, Num};
    use std::arch::wasm32::*;

    impl F2 {
        #[inline(always)]
        pub fn new(a: f64, b: f64) -> F2 {
            F2(f64x2(a, b))
        }
        #[inline(always)]
        pub fn lanes(self) -> [f64; 2] {
            [
                f64x2_extract_lane::<0>(self.0),
                f64x2_extract_lane::<1>(self.0),
            ]
        }
    }

    impl Num for F2 {
        #[inline(always)]
        fn c(v: f64) -> F2 {
            F2(f64x2_splat(v))
        }
    }

    macro_rules! op {
        ($trait:ident, $method:ident, $simd:ident) => {
            impl std::ops::$trait for F2 {
                type Output = F2;
                #[inline(always)]
                fn $method(self, rhs: F2) -> F2 {
                    F2($simd(self.0, rhs.0))
                }
            }
        };
    }
    op!(Add, add, f64x2_add);
    op!(Sub, sub, f64x2_sub);
    op!(Mul, mul, f64x2_mul);
    op!(Div, div, f64x2_div);
}

/// Two `f64` lanes, each operation the same IEEE operation on both (an
/// array where there is no wasm simd128: natively, or a plugin built
/// without it).
#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
#[derive(Clone, Copy)]
pub struct F2([f64; 2]);

#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
mod lanes {
    use super::{F2, Num};

    impl F2 {
        #[inline(always)]
        pub fn new(a: f64, b: f64) -> F2 {
            F2([a, b])
        }
        #[inline(always)]
        pub fn lanes(self) -> [f64; 2] {
            self.0
        }
    }

    impl Num for F2 {
        #[inline(always)]
        fn c(v: f64) -> F2 {
            F2([v, v])
        }
    }

    macro_rules! op {
        ($trait:ident, $method:ident, $op:tt) => {
            impl std::ops::$trait for F2 {
                type Output = F2;
                #[inline(always)]
                fn $method(self, rhs: F2) -> F2 {
                    F2([self.0[0] $op rhs.0[0], self.0[1] $op rhs.0[1]])
                }
            }
        };
    }
    op!(Add, add, +);
    op!(Sub, sub, -);
    op!(Mul, mul, *);
    op!(Div, div, /);
}
