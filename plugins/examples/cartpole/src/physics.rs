//! CartPole physics, identical to Gymnasium's CartPole-v1 (Euler integration,
//! computed in f64, observed as f32). Pure code: the wasm plugin and the host's
//! native benchmark both compile this file.

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
        let (sin, cos) = theta.sin_cos();
        let temp = (force + POLE_MASS_LENGTH * theta_dot * theta_dot * sin) / TOTAL_MASS;
        let theta_acc = (GRAVITY * sin - cos * temp)
            / (LENGTH * (4.0 / 3.0 - MASS_POLE * cos * cos / TOTAL_MASS));
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
