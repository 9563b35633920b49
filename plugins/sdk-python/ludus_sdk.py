"""The ludus plugin SDK for Python.

Write an environment, an agent or a reward function as a Python class, then
export it with one call, the way the Rust SDK's macros do:

    import ludus_sdk as ludus

    class CartPole(ludus.Env):
        def __init__(self, config: str): ...
        def info(self) -> ludus.EnvInfo: ...
        def reset(self, seed: int) -> ludus.ResetResult: ...
        def step(self, action: ludus.Action) -> ludus.StepResult: ...

    EnvPlugin = ludus.export_env(CartPole)

The SDK derives the batched interface (`batch-reset`, `batch-step`) from
`reset` and `step`; an env whose observation is one vector can also define
`reset_flat(seed)` and `step_flat(action)` on plain values, the batched fast
path (see `Env`).

`ludus build PATH` turns the project into a WebAssembly component with
componentize-py. The generated bindings (`wit_world`) exist only inside that
build; this module imports them, so import it only from plugin code.

Errors: a `ValueError` raised by the class's `__init__` rejects the config
(the host reports it as a load error naming the plugin); any other exception
ends the episode as `crashed`, with the Python traceback in the message.
"""

from __future__ import annotations

import os
import sys
import traceback
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from componentize_py_types import Err
from wit_world.imports import log as _log
from wit_world.imports import types as _t

# Only the agent world imports the memory interface. Imports must happen while
# componentize-py builds the component (its snapshot holds the loaded modules),
# so this one is tried here rather than on first use.
try:
    from wit_world.imports import memory as _memory_host
except ImportError:
    _memory_host = None
# Agents and reward plugins import the model interface (contract 0.1.3).
try:
    from wit_world.imports import model as _model_host
except ImportError:
    _model_host = None

# The contract's types, under the names the Rust SDK uses.
BoxSpace = _t.BoxSpace
ImageSpace = _t.ImageSpace
NamedSpace = _t.NamedSpace
ActionSpace = _t.ActionSpace
EnvInfo = _t.EnvInfo
AgentInfo = _t.AgentInfo
RewardInfo = _t.RewardInfo
Part = _t.Part
Image = _t.Image
Rect = _t.Rect
Element = _t.Element
ResetResult = _t.ResetResult
StepResult = _t.StepResult
BatchResult = _t.BatchResult
StepContext = _t.StepContext
EpisodeEnd = _t.EpisodeEnd
Transition = _t.Transition
ScoreResult = _t.ScoreResult
PointerAction = _t.PointerAction
PointerKind = _t.PointerKind
MouseButton = _t.MouseButton
KeyPress = _t.KeyPress

# Observation part values.
ValueDiscrete = _t.Value_Discrete
ValueVector = _t.Value_Vector
ValueImage = _t.Value_Image
ValueText = _t.Value_Text
ValueTree = _t.Value_Tree

# Actions.
ActionDiscrete = _t.Action_Discrete
ActionContinuous = _t.Action_Continuous
ActionPointer = _t.Action_Pointer
ActionTypeText = _t.Action_TypeText
ActionKey = _t.Action_Key
ActionElement = _t.Action_Element
ActionNoop = _t.Action_Noop
Action = _t.Action
Observation = List[_t.Part]

# Observation part spaces.
SpaceDiscrete = _t.PartSpace_Discrete
SpaceBox = _t.PartSpace_Box
SpaceImage = _t.PartSpace_Image
SpaceText = _t.PartSpace_Text
SpaceTree = _t.PartSpace_Tree


class ConfigError(ValueError):
    """Raise from `__init__` to reject a config string."""


# ---------------------------------------------------------------- helpers


def discrete_action_space(n: int) -> ActionSpace:
    """Actions 0..n."""
    return ActionSpace(
        discrete=n, continuous=None, pointer=None, text=None, keys=None, element=False
    )


def continuous_action_space(low: List[float], high: List[float]) -> ActionSpace:
    """Continuous vector actions within the box [low, high]."""
    return ActionSpace(
        discrete=None,
        continuous=BoxSpace(shape=[len(low)], low=list(low), high=list(high)),
        pointer=None,
        text=None,
        keys=None,
        element=False,
    )


def vector_space(name: str, low: List[float], high: List[float]) -> NamedSpace:
    """A named real-valued vector part of an observation space."""
    return NamedSpace(
        name=name,
        space=SpaceBox(BoxSpace(shape=[len(low)], low=list(low), high=list(high))),
    )


def vector_observation(name: str, values: List[float]) -> Observation:
    """A one-part observation holding a vector."""
    return [Part(name, ValueVector(values))]


def part(observation: Observation, name: str):
    """The value of the part called `name`, or None."""
    for p in observation:
        if p.name == name:
            return p.value
    return None


def vector_part(observation: Observation, name: str) -> Optional[List[float]]:
    """The vector part called `name`, or None."""
    v = part(observation, name)
    return v.value if isinstance(v, ValueVector) else None


def text_part(observation: Observation, name: str) -> Optional[str]:
    """The text part called `name`, or None."""
    v = part(observation, name)
    return v.value if isinstance(v, ValueText) else None


def discrete(n: int) -> Action:
    """The discrete action `n`."""
    return ActionDiscrete(n)


def noop() -> Action:
    return ActionNoop()


def parse_config(config: str) -> Dict[str, str]:
    """Parses `key=value,key=value` (spaces ignored); raises ConfigError."""
    out: Dict[str, str] = {}
    for entry in config.replace(";", ",").split(","):
        entry = entry.strip()
        if not entry:
            continue
        key, sep, value = entry.partition("=")
        if not sep:
            raise ConfigError(f"config entry `{entry}` is not of the form key=value")
        out[key.strip()] = value.strip()
    return out


def success_info(success: bool) -> str:
    """`{"success":true}` or `{}`."""
    return '{"success":true}' if success else "{}"


def is_success(info: str) -> bool:
    """Whether an info JSON text says `"success": true`."""
    return '"success":true' in "".join(info.split())


_MASK = (1 << 64) - 1


class Rng:
    """SplitMix64, bit for bit the Rust SDK's `Rng`: seed it from the seed the
    host gives you, never from a clock."""

    __slots__ = ("state",)

    def __init__(self, seed: int):
        self.state = seed & _MASK

    def next_u64(self) -> int:
        self.state = (self.state + 0x9E3779B97F4A7C15) & _MASK
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
        return z ^ (z >> 31)

    def next_float(self) -> float:
        """Uniform in [0, 1)."""
        # `next_u64` inlined: resets draw several of these per episode.
        self.state = z = (self.state + 0x9E3779B97F4A7C15) & _MASK
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
        return ((z ^ (z >> 31)) >> 11) * (1.0 / (1 << 53))

    def uniform(self, low: float, high: float) -> float:
        return low + (high - low) * self.next_float()

    def below(self, n: int) -> int:
        """Uniform in 0..n (n > 0)."""
        return ((self.next_u64() >> 32) * n) >> 32


def next_seed(seed: int) -> int:
    """The seed of a batched copy's next episode (as the Rust SDK derives it)."""
    return Rng(seed ^ 0xA0761D6478BD642F).next_u64()


class _Log:
    """Log lines, captured by the host with the frame they are written in."""

    @staticmethod
    def trace(message: str) -> None:
        _log.log(_log.Level.TRACE, message)

    @staticmethod
    def debug(message: str) -> None:
        _log.log(_log.Level.DEBUG, message)

    @staticmethod
    def info(message: str) -> None:
        _log.log(_log.Level.INFO, message)

    @staticmethod
    def warn(message: str) -> None:
        _log.log(_log.Level.WARN, message)

    @staticmethod
    def error(message: str) -> None:
        _log.log(_log.Level.ERROR, message)


log = _Log()


class _Memory:
    """The agent's execution memory (agents only): text values by path.
    `/episode/...` is cleared every episode, `/agent/...` persists across
    episodes and runs, `/user/...` is read-only."""

    @staticmethod
    def _host():
        if _memory_host is None:
            raise RuntimeError("execution memory is for agents: this plugin is not built for the agent world")
        return _memory_host

    def read(self, path: str) -> Optional[str]:
        return self._host().read(path)

    def write(self, path: str, value: str) -> None:
        """Raises ValueError for read-only scopes and malformed paths."""
        try:
            self._host().write(path, value)
        except Err as e:
            raise ValueError(e.value) from None

    def delete(self, path: str) -> None:
        try:
            self._host().delete(path)
        except Err as e:
            raise ValueError(e.value) from None

    def list(self, prefix: str) -> List[str]:
        return self._host().list(prefix)


memory = _Memory()


# ---------------------------------------------------------------- models


class ModelCallError(Exception):
    """A model call without an answer. `kind` is one of `budget-exceeded`,
    `unknown-endpoint`, `unavailable`, `bad-request`, `timeout`; the
    message is the host's one-line explanation."""

    def __init__(self, kind: str, message: str):
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message


_MODEL_ERROR_KINDS = {
    "ModelError_BudgetExceeded": "budget-exceeded",
    "ModelError_UnknownEndpoint": "unknown-endpoint",
    "ModelError_Unavailable": "unavailable",
    "ModelError_BadRequest": "bad-request",
    "ModelError_Timeout": "timeout",
}


def message(role: str, text: str):
    """A chat message of one text part."""
    m = _model_host_or_raise()
    return m.Message(role=role, content=[m.ContentPart_Text(value=text)], tool_calls=[], tool_call_id=None)


def _model_host_or_raise():
    if _model_host is None:
        raise RuntimeError("model calls are for agents and reward plugins: this plugin is not built for those worlds")
    return _model_host


def env_tools():
    """The tools the episode's environment offers (empty for most)."""
    return _model_host_or_raise().env_tools()


def tool_call_action(call) -> Action:
    """The action that calls `call` (a tool call from a response):
    `type-text` holding `{"tool_call": {...}}`, as the Rust SDK writes it."""
    import json
    try:
        args = json.loads(call.arguments)
    except ValueError:
        args = call.arguments
    text = json.dumps({"tool_call": {"id": call.id, "name": call.name, "arguments": args}})
    return _t.Action_TypeText(value=text)


def chat(messages, endpoint: str = "default", temperature: Optional[float] = None,
         top_p: Optional[float] = None, max_tokens: Optional[int] = None,
         response_format: Optional[str] = None, stop: Sequence[str] = (),
         seed: Optional[int] = None, logprobs: bool = False, tools=()):
    """Sends a chat request through the host, as the Rust SDK's
    `model::chat` does, and returns the response (`content`, `tool_calls`,
    `finish_reason`, `prompt_tokens`, `completion_tokens`, `model`,
    `tokens`). `messages` are `message(role, text)` values or
    `(role, text)` pairs. Raises `ModelCallError` when there is no answer."""
    m = _model_host_or_raise()
    msgs = [message(x[0], x[1]) if isinstance(x, tuple) else x for x in messages]
    request = m.ChatRequest(
        endpoint=endpoint, messages=msgs, tools=list(tools), response_format=response_format,
        temperature=temperature, top_p=top_p, max_tokens=max_tokens, stop=list(stop),
        seed=seed, logprobs=logprobs,
    )
    try:
        return m.chat(request)
    except Err as e:
        kind = _MODEL_ERROR_KINDS.get(type(e.value).__name__, "unavailable")
        raise ModelCallError(kind, getattr(e.value, "value", str(e.value))) from None


# ---------------------------------------------------------------- plugin bases


class Env:
    """An environment. Implement `__init__(config)`, `info()`, `reset(seed)`
    and `step(action)`; the SDK derives the batched interface from them.

    The batched interface's fast path (optional, for envs whose observation
    is one vector): also implement `reset_flat` and `step_flat` on plain
    Python values, and `batch-step` calls them instead of building an
    `Action`, a `StepResult` and an observation per copy and step."""

    def __init__(self, config: str) -> None:
        if parse_config(config):
            raise ConfigError(f"{type(self).__name__} takes no config (got `{config}`)")

    def info(self) -> EnvInfo:
        raise NotImplementedError

    def reset(self, seed: int) -> ResetResult:
        raise NotImplementedError

    def step(self, action: Action) -> StepResult:
        raise NotImplementedError

    # The fast path: `None` here means "not implemented"; define both as
    # methods to use it (an instance may set them to None to opt out).
    #
    #   def reset_flat(self, seed: int) -> Sequence[float]
    #       Starts an episode like `reset(seed)` and returns its observation
    #       as `vector_size` floats (a list or a tuple).
    #   def step_flat(self, action) -> (Sequence[float], float, bool, bool)
    #       Applies one action like `step` and returns (observation, reward,
    #       terminated, truncated). `action` is a plain value: an `int` for a
    #       discrete action space, a list of floats for a continuous one.
    #
    # They must agree with `reset` and `step`: batched copies must see what
    # single stepping sees. The SDK copies the observation's values before it
    # calls the env again, so returning a list the env keeps is fine.
    reset_flat: Optional[Callable[[int], Sequence[float]]] = None
    step_flat: Optional[Callable[..., Tuple[Sequence[float], float, bool, bool]]] = None


class Agent:
    """An agent. Implement `__init__(config)`, `info()` and `act()`."""

    def __init__(self, config: str) -> None:
        if parse_config(config):
            raise ConfigError(f"{type(self).__name__} takes no config (got `{config}`)")

    def info(self) -> AgentInfo:
        raise NotImplementedError

    def begin_episode(self, env: EnvInfo, task: str, seed: int) -> None:
        """A new episode starts; `seed` is for the agent's own randomness."""

    def act(self, observation: Observation, context: StepContext) -> Action:
        raise NotImplementedError

    def end_episode(self, end: EpisodeEnd) -> None:
        """The episode ended."""


class Reward:
    """A reward function. Implement `__init__(config)`, `info()`, `score()`."""

    def __init__(self, config: str) -> None:
        if parse_config(config):
            raise ConfigError(f"{type(self).__name__} takes no config (got `{config}`)")

    def info(self) -> RewardInfo:
        raise NotImplementedError

    def score(self, transition: Transition) -> ScoreResult:
        raise NotImplementedError


def _construct(cls, config: str):
    try:
        return cls(config)
    except ValueError as e:
        raise Err(str(e)) from None


def _report(call: str) -> None:
    """Writes the running exception's traceback on stderr as one line, where
    the host picks it up for the crash message, then traps (abort): the
    episode ends as `crashed`."""
    lines = traceback.format_exc().rstrip().splitlines()
    sys.stderr.write(f"Python exception in `{call}`: " + " / ".join(l.strip() for l in lines) + "\n")
    sys.stderr.flush()
    os.abort()


class _EnvState:
    """The env plugin's state. componentize-py makes a new instance of the
    exported class for every call, so the state lives here, one per module."""

    def __init__(self, cls):
        self.cls = cls
        self.env = None
        self.info = None
        self.config = ""
        # The batched copies, as parallel lists: the envs, each copy's seed,
        # and the call (counting `batch-step` calls) at which its episode
        # reaches the step limit.
        self.envs: list = []
        self.seeds: List[int] = []
        self.deadlines: List[int] = []
        self.now = 0
        self.max_steps = _NO_LIMIT
        # With the fast path: each copy's bound `reset_flat` and `step_flat`.
        self.resets: Optional[list] = None
        self.steps: Optional[list] = None

    def init(self, config: str) -> EnvInfo:
        try:
            env = _construct(self.cls, config)
            info = env.info()
        except Err:
            raise
        except BaseException:
            _report("init")
            raise
        self.env, self.info, self.config = env, info, config
        return info

    def vector_size(self) -> int:
        info = self.info
        if info is None:
            raise Err("the host called batch-reset before `init`")
        if info.vector_size <= 0:
            raise Err(
                f"environment `{info.name}` has no single-vector observation, so it cannot be batched"
            )
        return info.vector_size

    def action_width(self) -> int:
        """Action values per copy in `batch-step` (0: discrete)."""
        space = self.info.action_space
        if space.discrete is not None:
            return 0
        if space.continuous is not None:
            return max(1, len(space.continuous.low))
        return 1

    def batch_reset(self, seeds: List[int]) -> List[float]:
        size = self.vector_size()
        out: List[float] = []
        self.envs, self.seeds, self.now = [], list(seeds), 0
        self.max_steps = self.info.max_steps or _NO_LIMIT
        self.deadlines = [self.max_steps] * len(seeds)
        self.resets = self.steps = None
        try:
            envs = [_construct(self.cls, self.config) for _ in seeds]
            # getattr: a class that does not derive from `Env` has no hooks.
            flat = all(
                getattr(e, "reset_flat", None) is not None
                and getattr(e, "step_flat", None) is not None
                for e in envs
            )
            for env, seed in zip(envs, seeds):
                if flat:
                    _push_flat(out, env.reset_flat(seed), size, "reset_flat")
                else:
                    _push_vector(out, env.reset(seed).observation, size)
        except Err:
            raise
        except BaseException:
            _report("batch-reset")
            raise
        self.envs = envs
        if flat:
            self.resets = [e.reset_flat for e in envs]
            self.steps = [e.step_flat for e in envs]
        return out

    def batch_step(self, actions: List[float]) -> BatchResult:
        size = self.vector_size()
        width = self.action_width()
        n = len(self.envs)
        if len(actions) != n * max(width, 1):
            raise Err(
                f"batch-step got {len(actions)} action values for {n} copies of width {max(width, 1)}"
            )
        try:
            if self.steps is not None:
                return self._step_flat(actions, width, size)
            return self._step_general(actions, width, size)
        except BaseException:
            _report("batch-step")
            raise

    def _step_flat(self, actions: List[float], width: int, size: int) -> BatchResult:
        """The fast path: plain values in and out, no objects per copy."""
        n = len(self.envs)
        self.now = now = self.now + 1
        seeds, deadlines, steps, resets = self.seeds, self.deadlines, self.steps, self.resets
        max_steps = self.max_steps
        # Whether a copy may reach the step limit in this call at all.
        limit = now >= min(deadlines, default=_NO_LIMIT)
        observations: List[float] = []
        extend = observations.extend
        rewards: List[float] = []
        reward = rewards.append
        flags = bytearray(n)
        for i in range(n):
            if width == 0:
                # As the Rust SDK decodes it: negative (and NaN) is action 0.
                a = actions[i]
                obs, r, terminated, truncated = steps[i](int(a) if a > 0.0 else 0)
            else:
                obs, r, terminated, truncated = steps[i](actions[i * width : (i + 1) * width])
            if terminated or truncated or (limit and now >= deadlines[i]):
                truncated = truncated or now >= deadlines[i]
                flags[i] = (1 if terminated else 0) | (2 if truncated else 0)
                seeds[i] = seed = _next_seed(seeds[i])
                deadlines[i] = now + max_steps
                obs = resets[i](seed)
            extend(obs)
            reward(r)
        if len(observations) != n * size:
            raise ValueError(
                f"step_flat or reset_flat returned an observation of the wrong length (vector_size is {size})"
            )
        return BatchResult(observations, rewards, bytes(flags))

    def _step_general(self, actions: List[float], width: int, size: int) -> BatchResult:
        """Through `step` and `reset`: an `Action` and a `StepResult` per copy."""
        self.now = now = self.now + 1
        seeds, deadlines = self.seeds, self.deadlines
        observations: List[float] = []
        rewards: List[float] = []
        flags = bytearray(len(self.envs))
        for i, env in enumerate(self.envs):
            if width == 0:
                a = actions[i]
                action = ActionDiscrete(int(a) if a > 0.0 else 0)
            else:
                action = ActionContinuous(list(actions[i * width : (i + 1) * width]))
            step = env.step(action)
            truncated = step.truncated or now >= deadlines[i]
            rewards.append(step.reward)
            flags[i] = int(step.terminated) | (int(truncated) << 1)
            if step.terminated or truncated:
                seeds[i] = _next_seed(seeds[i])
                deadlines[i] = now + self.max_steps
                _push_vector(observations, env.reset(seeds[i]).observation, size)
            else:
                _push_vector(observations, step.observation, size)
        return BatchResult(observations, rewards, bytes(flags))


_NO_LIMIT = 1 << 62


def _next_seed(seed: int) -> int:
    """`next_seed`, without an `Rng` object."""
    z = ((seed ^ 0xA0761D6478BD642F) + 0x9E3779B97F4A7C15) & _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


def _push_vector(out: List[float], observation: Observation, size: int) -> None:
    start = len(out)
    for p in observation:
        if isinstance(p.value, ValueVector):
            out.extend(p.value.value)
    # Keep the layout fixed even if an observation is malformed.
    del out[start + size :]
    out.extend([0.0] * (start + size - len(out)))


def _push_flat(out: List[float], values, size: int, hook: str) -> None:
    if len(values) != size:
        raise ValueError(f"{hook} returned {len(values)} values; the env's vector_size is {size}")
    out.extend(values)


def export_env(cls) -> type:
    """The class componentize-py exports for the env world: assign it to
    `EnvPlugin` in your plugin's module."""
    state = _EnvState(cls)

    class EnvPlugin:
        def init(self, config: str) -> EnvInfo:
            return state.init(config)

        def reset(self, seed: int) -> ResetResult:
            try:
                return state.env.reset(seed)
            except BaseException:
                _report("reset")
                raise

        def step(self, action: Action) -> StepResult:
            try:
                return state.env.step(action)
            except BaseException:
                _report("step")
                raise

        def batch_reset(self, seeds: List[int]) -> List[float]:
            return state.batch_reset(seeds)

        def batch_step(self, actions: List[float]) -> BatchResult:
            return state.batch_step(actions)

    return EnvPlugin


def _init(state: dict, cls, config: str):
    try:
        plugin = _construct(cls, config)
        info = plugin.info()
    except Err:
        raise
    except BaseException:
        _report("init")
        raise
    state["plugin"] = plugin
    return info


def export_agent(cls) -> type:
    """The class componentize-py exports for the agent world: assign it to
    `AgentPlugin` in your plugin's module."""
    state: dict = {"plugin": None}

    class AgentPlugin:
        def init(self, config: str) -> AgentInfo:
            return _init(state, cls, config)

        def begin_episode(self, env: EnvInfo, task: str, seed: int) -> None:
            try:
                state["plugin"].begin_episode(env, task, seed)
            except BaseException:
                _report("begin-episode")
                raise

        def act(self, observation: Observation, context: StepContext) -> Action:
            try:
                return state["plugin"].act(observation, context)
            except BaseException:
                _report("act")
                raise

        def end_episode(self, end: EpisodeEnd) -> None:
            try:
                state["plugin"].end_episode(end)
            except BaseException:
                _report("end-episode")
                raise

    return AgentPlugin


def export_reward(cls) -> type:
    """The class componentize-py exports for the reward world: assign it to
    `RewardPlugin` in your plugin's module."""
    state: dict = {"plugin": None}

    class RewardPlugin:
        def init(self, config: str) -> RewardInfo:
            return _init(state, cls, config)

        def score(self, transition: Transition) -> ScoreResult:
            try:
                return state["plugin"].score(transition)
            except BaseException:
                _report("score")
                raise

    return RewardPlugin


__all__ = [
    n
    for n in dir()
    if not n.startswith("_")
    and n not in ("annotations", "Callable", "Dict", "List", "Optional", "Sequence", "Tuple", "os", "sys", "traceback", "Err")
]
