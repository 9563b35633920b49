"""An LLM agent for the maze, in Python: each step it shows the model the
grid and the task and asks for one move in a JSON schema. An unusable
answer (an error from the host, text that is not the schema) becomes a
fallback move; each model error is counted in `/episode/model-errors/KIND`,
so its handling is visible frame by frame. Config: `max-tokens=N` (24)."""

import json

import ludus_sdk as ludus

MOVES = ["up", "right", "down", "left"]
SCHEMA = json.dumps({
    "type": "object",
    "properties": {"move": {"type": "string", "enum": MOVES}},
    "required": ["move"],
})


class LlmMazeAgent(ludus.Agent):
    def __init__(self, config: str):
        self.max_tokens = 24
        for key, value in ludus.parse_config(config).items():
            if key != "max-tokens":
                raise ludus.ConfigError(f"unknown config key `{key}` (known: max-tokens)")
            self.max_tokens = int(value)
        self.task = ""
        self.errors = {}

    def info(self) -> ludus.AgentInfo:
        return ludus.AgentInfo(
            name="py-llm-maze-agent",
            version="0.1.0",
            description="Asks a language model for each maze move.",
        )

    def begin_episode(self, env, task: str, seed: int) -> None:
        self.task = task
        self.errors = {}

    def act(self, observation, context) -> ludus.Action:
        grid = ludus.text_part(observation, "grid") or ""
        try:
            answer = ludus.chat(
                [
                    ("system", "You move an agent @ through a grid maze. Answer with JSON."),
                    ("user", f"Task: {self.task}\nGrid:\n{grid}\nWhich move?"),
                ],
                temperature=0.0,
                max_tokens=self.max_tokens,
                response_format=SCHEMA,
            )
        except ludus.ModelCallError as e:
            self.errors[e.kind] = self.errors.get(e.kind, 0) + 1
            ludus.memory.write(f"/episode/model-errors/{e.kind}", str(self.errors[e.kind]))
            return ludus.discrete(context.step % 4)
        try:
            move = json.loads(answer.content)["move"]
            return ludus.discrete(MOVES.index(move))
        except (ValueError, KeyError, TypeError):
            ludus.log.info(f"unusable answer: {answer.content!r}")
            return ludus.discrete(context.step % 4)


AgentPlugin = ludus.export_agent(LlmMazeAgent)
