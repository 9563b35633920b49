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
from typing import Callable, Dict, List, Optional

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
        return (self.next_u64() >> 11) * (1.0 / (1 << 53))

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


# ---------------------------------------------------------------- plugin bases


class Env:
    """An environment. Implement `__init__(config)`, `info()`, `reset(seed)`
    and `step(action)`; the SDK derives the batched interface from them."""

    def __init__(self, config: str) -> None:
        if parse_config(config):
            raise ConfigError(f"{type(self).__name__} takes no config (got `{config}`)")

    def info(self) -> EnvInfo:
        raise NotImplementedError

    def reset(self, seed: int) -> ResetResult:
        raise NotImplementedError

    def step(self, action: Action) -> StepResult:
        raise NotImplementedError


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
        self.batch: list = []

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

    def batch_reset(self, seeds: List[int]) -> List[float]:
        size = self.vector_size()
        out: List[float] = []
        self.batch = []
        try:
            for seed in seeds:
                env = _construct(self.cls, self.config)
                reset = env.reset(seed)
                _push_vector(out, reset.observation, size)
                self.batch.append([env, seed, 0])
        except Err:
            raise
        except BaseException:
            _report("batch-reset")
            raise
        return out

    def batch_step(self, actions: List[float]) -> BatchResult:
        size = self.vector_size()
        info = self.info
        space = info.action_space
        discrete_actions = space.discrete is not None
        width = 1
        if not discrete_actions and space.continuous is not None:
            width = max(1, len(space.continuous.low))
        n = len(self.batch)
        if len(actions) != n * width:
            raise Err(f"batch-step got {len(actions)} action values for {n} copies of width {width}")
        max_steps = info.max_steps
        observations: List[float] = []
        rewards: List[float] = []
        flags = bytearray()
        try:
            for i, copy in enumerate(self.batch):
                env = copy[0]
                if discrete_actions:
                    action = ActionDiscrete(int(max(actions[i], 0.0)))
                else:
                    action = ActionContinuous(list(actions[i * width : (i + 1) * width]))
                step = env.step(action)
                copy[2] += 1
                truncated = step.truncated or (max_steps > 0 and copy[2] >= max_steps)
                rewards.append(step.reward)
                flags.append(int(step.terminated) | (int(truncated) << 1))
                if step.terminated or truncated:
                    copy[1] = next_seed(copy[1])
                    copy[2] = 0
                    _push_vector(observations, env.reset(copy[1]).observation, size)
                else:
                    _push_vector(observations, step.observation, size)
        except BaseException:
            _report("batch-step")
            raise
        return BatchResult(observations, rewards, bytes(flags))


def _push_vector(out: List[float], observation: Observation, size: int) -> None:
    start = len(out)
    for p in observation:
        if isinstance(p.value, ValueVector):
            out.extend(p.value.value)
    # Keep the layout fixed even if an observation is malformed.
    del out[start + size :]
    out.extend([0.0] * (start + size - len(out)))


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
    and n not in ("annotations", "Callable", "Dict", "List", "Optional", "os", "sys", "traceback", "Err")
]
