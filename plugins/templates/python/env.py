"""{{name}}: a corridor. The agent starts somewhere left of the goal and walks
(action 0 left, 1 right); reaching the goal ends the episode as a success.
Observation: one vector part `state` = [position, goal]."""

import ludus_sdk as ludus

LENGTH = 8


class Corridor(ludus.Env):
    def __init__(self, config: str):
        super().__init__(config)  # takes no config: rejects any key
        self.position = 0

    def info(self) -> ludus.EnvInfo:
        return ludus.EnvInfo(
            name="{{name}}",
            version="0.1.0",
            description="Walk right to the goal.",
            observation_space=[ludus.vector_space("state", [0.0, 0.0], [LENGTH, LENGTH])],
            action_space=ludus.discrete_action_space(2),
            max_steps=100,
            vector_size=2,
        )

    def reset(self, seed: int) -> ludus.ResetResult:
        self.position = ludus.Rng(seed).below(LENGTH // 2)
        return ludus.ResetResult(self.observation(), "Reach the goal.", "{}")

    def step(self, action: ludus.Action) -> ludus.StepResult:
        if isinstance(action, ludus.ActionDiscrete):
            if action.value == 1:
                self.position += 1
            elif action.value == 0:
                self.position = max(0, self.position - 1)
        done = self.position >= LENGTH
        ludus.log.debug(f"position {self.position}")
        return ludus.StepResult(
            self.observation(), 1.0 if done else -0.01, done, False, ludus.success_info(done)
        )

    # Optional, for speed when the trainer steps many copies per call
    # (`batch-step`): `reset_flat(seed)` and `step_flat(action)` on plain
    # values; see "The batched fast path" in ludus's docs/plugin-authors.md.

    def observation(self) -> ludus.Observation:
        return ludus.vector_observation("state", [float(self.position), float(LENGTH)])


EnvPlugin = ludus.export_env(Corridor)
