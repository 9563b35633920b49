"""ludus from Python: wasm environment plugins as Gymnasium environments.

    import ludus
    env = ludus.make(env="plugins/target/wasm32-wasip2/release/cartpole.wasm")
    obs, info = env.reset(seed=1)
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())

Each episode runs in a fresh, sandboxed instance of the plugin, seeded as
`ludus run` seeds it: the same seed gives the same observations. With
`record="run.db"` the episodes are recorded as `ludus run` records them. A
plugin that crashes raises `ludus.PluginCrash` with its message (and, when
recording, the episode is recorded as crashed).
"""

import json
import string

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from ._ludus import PluginCrash, Store, WasmEnv

__all__ = ["make", "make_vec", "open", "LudusEnv", "Recording", "PluginCrash"]

# Text parts may hold any printable character and whitespace.
_CHARSET = frozenset(string.printable + "".join(chr(c) for c in range(0xA0, 0x250)))
_MAX_TEXT = 1 << 16


def _text_space(max_bytes):
    return spaces.Text(max_length=int(max_bytes) or _MAX_TEXT, min_length=0, charset=_CHARSET)


def _part_space(space):
    if space == "Tree":
        # An element tree, as JSON text.
        return _text_space(_MAX_TEXT)
    (kind, v), = space.items()
    if kind == "Discrete":
        return spaces.Discrete(v)
    if kind == "Box":
        low = np.array(v["low"], dtype=np.float32).reshape(v["shape"])
        high = np.array(v["high"], dtype=np.float32).reshape(v["shape"])
        return spaces.Box(low=low, high=high, dtype=np.float32)
    if kind == "Image":
        shape = (v["height"], v["width"], v["channels"])
        return spaces.Box(low=0, high=255, shape=shape, dtype=np.uint8)
    if kind == "Text":
        return _text_space(v)
    raise ValueError(f"unsupported observation space {space!r}")


_POINTER_KINDS = ["Move", "Click", "DoubleClick", "Drag", "Scroll"]
_BUTTONS = ["Left", "Middle", "Right"]
_SCROLL = 10


def _pointer(x):
    p = {k: int(x[k]) for k in ("x", "y", "to_x", "to_y", "dx", "dy")}
    p["kind"] = _POINTER_KINDS[int(x["kind"])]
    p["button"] = _BUTTONS[int(x["button"])]
    return {"Pointer": p}


def _action_kinds(a):
    """The env's action kinds, as (name, Gymnasium space, to-contract)."""
    kinds = []
    if a.get("discrete"):
        kinds.append(("discrete", spaces.Discrete(a["discrete"]), lambda x: {"Discrete": int(x)}))
    if a.get("continuous"):
        b = a["continuous"]
        box = spaces.Box(
            low=np.array(b["low"], dtype=np.float32).reshape(b["shape"]),
            high=np.array(b["high"], dtype=np.float32).reshape(b["shape"]),
            dtype=np.float32,
        )
        kinds.append(("continuous", box, lambda x: {"Continuous": [float(v) for v in np.ravel(x)]}))
    if a.get("text"):
        # Typing, and tools: a tool call is text carrying JSON.
        kinds.append(("text", _text_space(a["text"]), lambda x: {"TypeText": str(x)}))
    if a.get("element"):
        kinds.append(("element", spaces.Discrete(1 << 16), lambda x: {"Element": int(x)}))
    if a.get("pointer"):
        w, h = a["pointer"]
        pointer = spaces.Dict(
            {
                "kind": spaces.Discrete(len(_POINTER_KINDS)),
                "button": spaces.Discrete(len(_BUTTONS)),
                "x": spaces.Discrete(w),
                "y": spaces.Discrete(h),
                "to_x": spaces.Discrete(w),
                "to_y": spaces.Discrete(h),
                "dx": spaces.Discrete(2 * _SCROLL + 1, start=-_SCROLL),
                "dy": spaces.Discrete(2 * _SCROLL + 1, start=-_SCROLL),
            }
        )
        kinds.append(("pointer", pointer, _pointer))
    if a.get("keys"):
        names = list(a["keys"])
        key = spaces.Dict({"key": spaces.Discrete(len(names)), "modifiers": spaces.MultiBinary(3)})

        def press(x, names=names):
            ctrl, alt, shift = (bool(v) for v in x["modifiers"])
            return {"Key": {"key": names[int(x["key"])], "ctrl": ctrl, "alt": alt, "shift": shift}}

        kinds.append(("key", key, press))
    if not kinds:
        raise ValueError(f"the env declares no action this package can send: {a!r}")
    return kinds


class LudusEnv(gym.Env):
    """A wasm environment plugin as a `gymnasium.Env`.

    Spaces: a vector part is a `Box`, a discrete one `Discrete`, an image a
    `Box` of `uint8` (height, width, channels), text `Text`, an element tree
    JSON `Text`; several parts make a `Dict`. Actions: `Discrete`, `Box`,
    `Text` (typing and tool calls, as JSON text), `Dict`s for pointer
    actions and key presses, or, when the env takes several kinds, a `Dict`
    with a `kind` index and one entry per kind.
    """

    metadata = {"render_modes": []}

    def __init__(self, env, config="", record=None):
        self._env = WasmEnv(str(env), config, None if record is None else str(record))
        self.run_id = None
        self.env_info = json.loads(self._env.info())
        parts = self.env_info["observation_space"]
        self._parts = [(p["name"], _part_space(p["space"])) for p in parts]
        if len(self._parts) == 1:
            self.observation_space = self._parts[0][1]
        else:
            self.observation_space = spaces.Dict(dict(self._parts))
        self._kinds = _action_kinds(self.env_info["action_space"])
        if len(self._kinds) == 1:
            self.action_space = self._kinds[0][1]
        else:
            entries = {"kind": spaces.Discrete(len(self._kinds))}
            entries.update({name: space for name, space, _ in self._kinds})
            self.action_space = spaces.Dict(entries)
        self.spec_max_steps = self.env_info.get("max_steps", 0)

    def _obs(self, raw):
        out = {}
        for name, space in self._parts:
            v = raw[name]
            if isinstance(space, spaces.Box) and space.dtype == np.uint8:
                pixels, shape = v
                v = np.frombuffer(pixels, dtype=np.uint8).reshape(shape)
            elif isinstance(space, spaces.Box):
                v = np.asarray(v, dtype=np.float32).reshape(space.shape)
            elif isinstance(space, spaces.Discrete):
                v = np.int64(v)
            out[name] = v
        if len(self._parts) == 1:
            return out[self._parts[0][0]]
        return out

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        if seed is None:
            seed = int(self.np_random.integers(0, 2**63 - 1))
        raw, info = self._env.reset(int(seed))
        return self._obs(raw), _info(info)

    def step(self, action):
        if len(self._kinds) == 1:
            contract = self._kinds[0][2](action)
        else:
            name, _, to_contract = self._kinds[int(action["kind"])]
            contract = to_contract(action[name])
        raw, reward, terminated, truncated, info = self._env.step(json.dumps(contract))
        return self._obs(raw), float(reward), bool(terminated), bool(truncated), _info(info)


    def close(self):
        """Ends the recording (if any); its run id is then `run_id`."""
        run = self._env.close()
        if run is not None:
            self.run_id = run
        super().close()


def _info(text):
    if not text:
        return {}
    try:
        v = json.loads(text)
    except ValueError:
        return {"text": text}
    return v if isinstance(v, dict) else {"value": v}


def make(env, config="", record=None, **kwargs):
    """A `gymnasium.Env` over the wasm env plugin at `env` (a path).

    With `record="run.db"`, every episode is recorded there as `ludus run`
    records it (one run per env; `close()` ends it), so `ludus debug` and the
    IDE open the episodes a Python trainer played.
    """
    path = kwargs.pop("path", env)
    if kwargs:
        raise TypeError(f"unknown arguments: {sorted(kwargs)}")
    return LudusEnv(path, config, record)


def make_vec(env, num_envs, config="", record=None, vectorization_mode="sync"):
    """A `gymnasium.vector.VectorEnv` of `num_envs` copies of the plugin
    (autoreset as Gymnasium 1.x defines it). With `record`, every copy's
    episodes are recorded (one run per copy)."""
    fns = [lambda: LudusEnv(env, config, record) for _ in range(num_envs)]
    if vectorization_mode == "async":
        return gym.vector.AsyncVectorEnv(fns)
    return gym.vector.SyncVectorEnv(fns)


class Recording:
    """A ludus recording, read only: runs and episodes as tables, an
    episode's frames as dicts. No SQL needed."""

    def __init__(self, path):
        self._store = Store(str(path))

    def _table(self, rows, as_):
        if as_ == "records":
            return rows
        import pyarrow as pa

        names = list(dict.fromkeys(k for r in rows for k in r))
        columns = {}
        for name in names:
            values = [r.get(name) for r in rows]
            # Seeds are unsigned 64-bit numbers.
            big = any(isinstance(v, int) and not isinstance(v, bool) and v >= 2**63 for v in values)
            columns[name] = pa.array(values, type=pa.uint64() if big else None)
        table = pa.table(columns)
        return table.to_pandas() if as_ == "pandas" else table

    def runs(self, as_="arrow"):
        """The runs: `run_id`, `created_at`, `seed`, `episodes`, `status`, `env`, `kind`."""
        return self._table(json.loads(self._store.runs()), as_)

    def episodes(self, run=None, as_="arrow"):
        """Episodes (of `run`, else of every run): outcome, return, length,
        success, digest, seed, and model calls, tokens and cost."""
        return self._table(json.loads(self._store.episodes(run)), as_)

    def frames(self, episode):
        """An episode's frames, one dict each (step, observation, action,
        reward, terminated, truncated, info)."""
        yield from json.loads(self._store.frames(int(episode)))


def open(path):  # noqa: A001 (as `ludus.open`)
    """A recording (a `.db` file `ludus run`, `ludus train` or `record=` wrote)."""
    return Recording(path)


def _register():
    # `gymnasium.make("ludus/Wasm-v0", env="PATH.wasm")` for any plugin.
    if "ludus/Wasm-v0" not in gym.registry:
        gym.register(id="ludus/Wasm-v0", entry_point="ludus:make")


_register()
