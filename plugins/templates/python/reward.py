"""{{name}}: 1 when the environment reports success (`"success": true` in
its info), 0 otherwise."""

import ludus_sdk as ludus


class SuccessReward(ludus.Reward):
    def info(self) -> ludus.RewardInfo:
        return ludus.RewardInfo("{{name}}", "0.1.0", "1 on success, 0 otherwise.")

    def score(self, t: ludus.Transition) -> ludus.ScoreResult:
        success = ludus.is_success(t.info)
        ended = success or t.terminated or t.truncated
        return ludus.ScoreResult(1.0 if success else 0.0, success if ended else None, None)


RewardPlugin = ludus.export_reward(SuccessReward)
