//! CartPole physics, identical to Gymnasium's CartPole-v1 (Euler integration,
//! computed in f64 with Gymnasium's order of operations, observed as f32).
//! Pure code: the wasm plugin and the host's native benchmark both compile
//! this file, so both compute the same bits.

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

impl CartPole {
    /// Resets from four uniform draws in [0, 1).
    pub fn reset(&mut self, uniforms: [f64; 4]) {
        for (s, u) in self.state.iter_mut().zip(uniforms) {
            *s = -0.05 + 0.1 * u;
        }
        self.steps = 0;
    }

    /// Pushes the cart left (0) or right (1). Returns (reward, terminated, truncated).
    pub fn step(&mut self, push_right: bool) -> (f32, bool, bool) {
        let [x, x_dot, theta, theta_dot] = self.state;
        let force = if push_right { FORCE_MAG } else { -FORCE_MAG };
        let (sin, cos) = sin_cos(theta);
        // Grouped as Gymnasium writes it (`np.square(theta_dot)`,
        // `np.square(costheta)`): the squares round first.
        let temp = (force + POLE_MASS_LENGTH * (theta_dot * theta_dot) * sin) / TOTAL_MASS;
        let theta_acc = (GRAVITY * sin - cos * temp)
            / (LENGTH * (4.0 / 3.0 - MASS_POLE * (cos * cos) / TOTAL_MASS));
        let x_acc = temp - POLE_MASS_LENGTH * theta_acc * cos / TOTAL_MASS;
        self.state = [
            x + TAU * x_dot,
            x_dot + TAU * x_acc,
            theta + TAU * theta_dot,
            theta_dot + TAU * theta_acc,
        ];
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

/// `(sin x, cos x)`. While the pole is up (|theta| is at most 12 degrees plus
/// one step) this is the polynomial kernel of musl's `sin` and `cos`, the very
/// operations in the same order, so it returns the same bits as the libm a
/// wasm32-wasip2 plugin links; inlined, it spares the plugin four calls per
/// step (each pays its fuel and interrupt checks) and shares `x * x`. Past
/// pi/4, and for the tiny arguments musl treats apart, it calls the libm.
#[inline(always)]
pub fn sin_cos(x: f64) -> (f64, f64) {
    const S1: f64 = -1.666_666_666_666_663_243_48e-1;
    const S2: f64 = 8.333_333_333_322_489_461_24e-3;
    const S3: f64 = -1.984_126_982_985_794_931_34e-4;
    const S4: f64 = 2.755_731_370_707_006_767_89e-6;
    const S5: f64 = -2.505_076_025_340_686_341_95e-8;
    const S6: f64 = 1.589_690_995_211_550_102_21e-10;
    const C1: f64 = 4.166_666_666_666_660_190_37e-2;
    const C2: f64 = -1.388_888_888_887_410_957_49e-3;
    const C3: f64 = 2.480_158_728_947_672_941_78e-5;
    const C4: f64 = -2.755_731_435_139_066_330_35e-7;
    const C5: f64 = 2.087_572_321_298_174_827_90e-9;
    const C6: f64 = -1.135_964_755_778_819_482_65e-11;
    let high = ((x.to_bits() >> 32) as u32) & 0x7fff_ffff;
    // musl: |x| <~ pi/4 takes the kernels; below 2^-26 (sin) and
    // 2^-27 * sqrt 2 (cos) it returns x and 1 without them.
    if !(0x3e50_0000..=0x3fe9_21fb).contains(&high) {
        return (x.sin(), x.cos());
    }
    let z = x * x;
    let w = z * z;
    // __sin(x, 0, 0)
    let r = S2 + z * (S3 + z * S4) + z * w * (S5 + z * S6);
    let v = z * x;
    let sin = x + v * (S1 + z * r);
    // __cos(x, 0); its last term `z*r - x*y` is `z*r` with y = 0 (z*r is not
    // zero in this range, so not even the sign of a zero differs).
    let r = z * (C1 + z * (C2 + z * C3)) + w * w * (C4 + z * (C5 + z * C6));
    let hz = 0.5 * z;
    let w = 1.0 - hz;
    let cos = w + (((1.0 - w) - hz) + z * r);
    (sin, cos)
}
