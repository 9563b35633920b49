"""A Python env that misbehaves on purpose at step 3, chosen by its config
`mode=`: `raise` (an exception deep in a helper), `loop` (never returns),
`bomb` (allocates until memory runs out), `ok` (behaves: 10 steps)."""

import ludus_sdk as ludus

MODES = ("ok", "raise", "loop", "bomb")


def check_pressure(step: int) -> None:
    if step >= 3:
        raise RuntimeError(f"pressure sensor failed at step {step}")


class Hostile(ludus.Env):
    def __init__(self, config: str):
        self.mode = ludus.parse_config(config).get("mode", "ok")
        if self.mode not in MODES:
            raise ludus.ConfigError(f"unknown mode `{self.mode}` (one of {', '.join(MODES)})")
        self.steps = 0

    def info(self) -> ludus.EnvInfo:
        return ludus.EnvInfo(
            name="py-hostile-env",
            version="0.1.0",
            description="Misbehaves at step 3.",
            observation_space=[ludus.vector_space("state", [0.0], [10.0])],
            action_space=ludus.discrete_action_space(2),
            max_steps=10,
            vector_size=1,
        )

    def reset(self, seed: int) -> ludus.ResetResult:
        self.steps = 0
        return ludus.ResetResult(ludus.vector_observation("state", [0.0]), "", "{}")

    def step(self, action: ludus.Action) -> ludus.StepResult:
        self.steps += 1
        if self.steps >= 3:
            if self.mode == "raise":
                check_pressure(self.steps)
            elif self.mode == "loop":
                n = 0
                while True:
                    n += 1
            elif self.mode == "bomb":
                hoard = []
                while True:
                    hoard.append(bytearray(8 << 20))
        done = self.steps >= 10
        return ludus.StepResult(
            ludus.vector_observation("state", [float(self.steps)]), 1.0, False, done, ""
        )


EnvPlugin = ludus.export_env(Hostile)
