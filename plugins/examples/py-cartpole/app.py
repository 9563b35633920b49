"""CartPole as a ludus env plugin in Python: the classic physics (Gymnasium
CartPole-v1), the same observation, actions and seeding as the Rust example
plugins/examples/cartpole. Observation: one vector part `state` =
[x, x_dot, theta, theta_dot]; actions: discrete(2), 0 pushes left, 1 right.
Reward 1 per step; truncated after 500 steps, which counts as success.

The physics lives in `step_flat`, the SDK's fast path for the batched
interface (plain values in and out); `step` wraps it for one-env calls."""

import math

import ludus_sdk as ludus

GRAVITY = 9.8
MASS_CART = 1.0
MASS_POLE = 0.1
TOTAL_MASS = MASS_CART + MASS_POLE
LENGTH = 0.5
POLE_MASS_LENGTH = MASS_POLE * LENGTH
FORCE_MAG = 10.0
TAU = 0.02
THETA_THRESHOLD = 12.0 * 2.0 * math.pi / 360.0
X_THRESHOLD = 2.4
MAX_STEPS = 500
HIGH = [X_THRESHOLD * 2.0, 3.4e38, THETA_THRESHOLD * 2.0, 3.4e38]

TASK = "Keep the pole upright for 500 steps."
SUCCESS = ludus.success_info(True)

sin, cos = math.sin, math.cos
Part, ValueVector, StepResult = ludus.Part, ludus.ValueVector, ludus.StepResult
ActionDiscrete = ludus.ActionDiscrete


class CartPole(ludus.Env):
    def __init__(self, config: str):
        super().__init__(config)  # takes no config: rejects any key
        self.state = (0.0, 0.0, 0.0, 0.0)  # x, x_dot, theta, theta_dot
        self.steps = 0
        # One result, updated by every `step`: the host copies it out as soon
        # as `step` returns, so nothing needs a fresh object per step.
        self.vector = ValueVector([])
        self.result = StepResult([Part("state", self.vector)], 1.0, False, False, "")

    def info(self) -> ludus.EnvInfo:
        return ludus.EnvInfo(
            name="py-cartpole",
            version="0.1.0",
            description="Balance a pole on a cart (Gymnasium CartPole-v1 physics), in Python.",
            observation_space=[ludus.vector_space("state", [-h for h in HIGH], HIGH)],
            action_space=ludus.discrete_action_space(2),
            max_steps=MAX_STEPS,
            vector_size=4,
        )

    def reset(self, seed: int) -> ludus.ResetResult:
        return ludus.ResetResult(
            ludus.vector_observation("state", list(self.reset_flat(seed))), TASK, "{}"
        )

    def step(self, action: ludus.Action) -> ludus.StepResult:
        push = 1 if isinstance(action, ActionDiscrete) and action.value == 1 else 0
        state, reward, terminated, truncated = self.step_flat(push)
        result = self.result
        self.vector.value = list(state)
        result.reward = reward
        result.terminated = terminated
        result.truncated = truncated
        result.info = SUCCESS if truncated else ""
        return result

    # The fast path: the batched interface calls these with plain values.

    def reset_flat(self, seed: int) -> tuple:
        draw = ludus.Rng(seed).next_float
        # x, x_dot, theta, theta_dot, each uniform in [-0.05, 0.05).
        self.state = (
            -0.05 + 0.1 * draw(),
            -0.05 + 0.1 * draw(),
            -0.05 + 0.1 * draw(),
            -0.05 + 0.1 * draw(),
        )
        self.steps = 0
        return self.state

    def step_flat(self, action: int) -> tuple:
        x, x_dot, theta, theta_dot = self.state
        force = FORCE_MAG if action == 1 else -FORCE_MAG
        s = sin(theta)
        c = cos(theta)
        # Grouped as Gymnasium writes it: the squares round first.
        temp = (force + POLE_MASS_LENGTH * (theta_dot * theta_dot) * s) / TOTAL_MASS
        theta_acc = (GRAVITY * s - c * temp) / (
            LENGTH * (4.0 / 3.0 - MASS_POLE * (c * c) / TOTAL_MASS)
        )
        x_acc = temp - POLE_MASS_LENGTH * theta_acc * c / TOTAL_MASS
        x += TAU * x_dot
        x_dot += TAU * x_acc
        theta += TAU * theta_dot
        theta_dot += TAU * theta_acc
        self.state = state = (x, x_dot, theta, theta_dot)
        self.steps = steps = self.steps + 1
        terminated = not (
            -X_THRESHOLD <= x <= X_THRESHOLD and -THETA_THRESHOLD <= theta <= THETA_THRESHOLD
        )
        return state, 1.0, terminated, not terminated and steps >= MAX_STEPS


EnvPlugin = ludus.export_env(CartPole)
