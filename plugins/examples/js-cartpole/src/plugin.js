// CartPole as a ludus env plugin in JavaScript: the classic physics (Gymnasium
// CartPole-v1), the same observation, actions and seeding as the Rust example
// plugins/examples/cartpole. Observation: one vector part `state` =
// [x, x_dot, theta, theta_dot]; actions: discrete(2), 0 pushes left, 1 right.
// Reward 1 per step; truncated after 500 steps, which counts as success.

import {
  Env,
  Rng,
  discreteActionSpace,
  exportEnv,
  successInfo,
  vectorObservation,
  vectorSpace,
} from './ludus/ludus-sdk.js';

const GRAVITY = 9.8;
const MASS_CART = 1.0;
const MASS_POLE = 0.1;
const TOTAL_MASS = MASS_CART + MASS_POLE;
const LENGTH = 0.5;
const POLE_MASS_LENGTH = MASS_POLE * LENGTH;
const FORCE_MAG = 10.0;
const TAU = 0.02;
const THETA_THRESHOLD = (12 * 2 * Math.PI) / 360;
const X_THRESHOLD = 2.4;
const MAX_STEPS = 500;
const HIGH = [X_THRESHOLD * 2, 3.4e38, THETA_THRESHOLD * 2, 3.4e38];

class CartPole extends Env {
  constructor(config) {
    super(config); // takes no config: rejects any key
    this.state = [0, 0, 0, 0];
    this.steps = 0;
  }

  info() {
    return {
      name: 'js-cartpole',
      version: '0.1.0',
      description: 'Balance a pole on a cart (Gymnasium CartPole-v1 physics), in JavaScript.',
      observationSpace: [vectorSpace('state', HIGH.map((h) => -h), HIGH)],
      actionSpace: discreteActionSpace(2),
      maxSteps: MAX_STEPS,
      vectorSize: 4,
    };
  }

  reset(seed) {
    const rng = new Rng(seed);
    this.state = [0, 1, 2, 3].map(() => -0.05 + 0.1 * rng.nextFloat());
    this.steps = 0;
    return { observation: vectorObservation('state', this.state), task: 'Keep the pole upright for 500 steps.', info: '{}' };
  }

  step(action) {
    const force = action.tag === 'discrete' && action.val === 1 ? FORCE_MAG : -FORCE_MAG;
    const [x, xDot, theta, thetaDot] = this.state;
    const sin = Math.sin(theta);
    const cos = Math.cos(theta);
    // Grouped as Gymnasium writes it: the squares round first.
    const temp = (force + POLE_MASS_LENGTH * (thetaDot * thetaDot) * sin) / TOTAL_MASS;
    const thetaAcc = (GRAVITY * sin - cos * temp) / (LENGTH * (4 / 3 - (MASS_POLE * (cos * cos)) / TOTAL_MASS));
    const xAcc = temp - (POLE_MASS_LENGTH * thetaAcc * cos) / TOTAL_MASS;
    this.state = [x + TAU * xDot, xDot + TAU * xAcc, theta + TAU * thetaDot, thetaDot + TAU * thetaAcc];
    this.steps += 1;
    const [nx, , nTheta] = this.state;
    const terminated = !(nx >= -X_THRESHOLD && nx <= X_THRESHOLD && nTheta >= -THETA_THRESHOLD && nTheta <= THETA_THRESHOLD);
    const truncated = !terminated && this.steps >= MAX_STEPS;
    return {
      observation: vectorObservation('state', this.state),
      reward: 1,
      terminated,
      truncated,
      info: truncated ? successInfo(true) : '',
    };
  }
}

export const envPlugin = exportEnv(CartPole);
