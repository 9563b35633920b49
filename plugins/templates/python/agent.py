"""{{name}}: acts uniformly at random among the environment's discrete
actions, from the seed the host passes at each episode start, and counts its
episodes in the execution memory (`/agent/episodes`)."""

import ludus_sdk as ludus


class RandomAgent(ludus.Agent):
    def __init__(self, config: str):
        super().__init__(config)  # takes no config: rejects any key
        self.rng = ludus.Rng(0)
        self.actions = 2

    def info(self) -> ludus.AgentInfo:
        return ludus.AgentInfo("{{name}}", "0.1.0", "Uniformly random discrete actions.")

    def begin_episode(self, env: ludus.EnvInfo, task: str, seed: int) -> None:
        self.rng = ludus.Rng(seed)
        self.actions = max(env.action_space.discrete or 2, 1)

    def act(self, observation: ludus.Observation, context: ludus.StepContext) -> ludus.Action:
        return ludus.discrete(self.rng.below(self.actions))

    def end_episode(self, end: ludus.EpisodeEnd) -> None:
        n = int(ludus.memory.read("/agent/episodes") or "0") + 1
        ludus.memory.write("/agent/episodes", str(n))
        ludus.log.info(f"episode {n} lasted {end.steps} steps")


AgentPlugin = ludus.export_agent(RandomAgent)
