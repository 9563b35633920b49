"""CartPole as a ludus env plugin in Python: the classic physics (Gymnasium
CartPole-v1), the same observation, actions and seeding as the Rust example
plugins/examples/cartpole. Observation: one vector part `state` =
[x, x_dot, theta, theta_dot]; actions: discrete(2), 0 pushes left, 1 right.
Reward 1 per step; truncated after 500 steps, which counts as success."""

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


class CartPole(ludus.Env):
    def __init__(self, config: str):
        super().__init__(config)  # takes no config: rejects any key
        self.x = self.x_dot = self.theta = self.theta_dot = 0.0
        self.steps = 0

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
        rng = ludus.Rng(seed)
        self.x, self.x_dot, self.theta, self.theta_dot = (
            -0.05 + 0.1 * rng.next_float() for _ in range(4)
        )
        self.steps = 0
        return ludus.ResetResult(self.observation(), TASK, "{}")

    def step(self, action: ludus.Action) -> ludus.StepResult:
        push_right = isinstance(action, ludus.ActionDiscrete) and action.value == 1
        force = FORCE_MAG if push_right else -FORCE_MAG
        theta_dot = self.theta_dot
        sin = math.sin(self.theta)
        cos = math.cos(self.theta)
        temp = (force + POLE_MASS_LENGTH * theta_dot * theta_dot * sin) / TOTAL_MASS
        theta_acc = (GRAVITY * sin - cos * temp) / (
            LENGTH * (4.0 / 3.0 - MASS_POLE * cos * cos / TOTAL_MASS)
        )
        x_acc = temp - POLE_MASS_LENGTH * theta_acc * cos / TOTAL_MASS
        self.x += TAU * self.x_dot
        self.x_dot += TAU * x_acc
        self.theta += TAU * theta_dot
        self.theta_dot += TAU * theta_acc
        self.steps += 1
        terminated = not (
            -X_THRESHOLD <= self.x <= X_THRESHOLD
            and -THETA_THRESHOLD <= self.theta <= THETA_THRESHOLD
        )
        truncated = not terminated and self.steps >= MAX_STEPS
        info = ludus.success_info(True) if truncated else ""
        return ludus.StepResult(self.observation(), 1.0, terminated, truncated, info)

    def observation(self) -> ludus.Observation:
        return ludus.vector_observation("state", [self.x, self.x_dot, self.theta, self.theta_dot])


EnvPlugin = ludus.export_env(CartPole)
