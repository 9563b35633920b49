"""A shaped reward for CartPole-like envs, as a ludus reward plugin in Python:
each step scores how upright the pole stayed (1 when vertical, 0 at the
failure angle), scaled by `scale` (config `scale=N`, default 1); an episode
that lasts to truncation is a success. It reads the `state` vector part
[x, x_dot, theta, theta_dot] of the next observation."""

import ludus_sdk as ludus

THETA_THRESHOLD = 12.0 * 2.0 * 3.141592653589793 / 360.0


class BalanceReward(ludus.Reward):
    def __init__(self, config: str):
        self.scale = 1.0
        for key, value in ludus.parse_config(config).items():
            if key != "scale":
                raise ludus.ConfigError(f"unknown config key `{key}` (known: scale)")
            try:
                self.scale = float(value)
            except ValueError:
                raise ludus.ConfigError(f"config key `scale`: cannot parse `{value}`") from None

    def info(self) -> ludus.RewardInfo:
        return ludus.RewardInfo(
            name="py-balance-reward",
            version="0.1.0",
            description="How upright the pole stayed, per step; success at truncation.",
        )

    def score(self, t: ludus.Transition) -> ludus.ScoreResult:
        state = ludus.vector_part(t.next, "state")
        if state is None or len(state) < 3:
            return ludus.ScoreResult(0.0, None, "no `state` vector in the observation")
        upright = max(0.0, 1.0 - abs(state[2]) / THETA_THRESHOLD)
        success = None
        if t.terminated or t.truncated:
            success = t.truncated or ludus.is_success(t.info)
        return ludus.ScoreResult(self.scale * upright, success, None)


RewardPlugin = ludus.export_reward(BalanceReward)
