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
import os
import string
from pathlib import Path

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from ._ludus import BatchEnv, PluginCrash, Store, WasmEnv

__all__ = [
    "make",
    "make_vec",
    "open",
    "example",
    "LudusEnv",
    "LudusVectorEnv",
    "Recording",
    "PluginCrash",
]

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

    def __init__(self, env, config="", record=None, limits=None):
        self._env = WasmEnv(
            str(env), config, None if record is None else str(record), _limits(limits)
        )
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
        # The contract's fast path (a vector observation of at most 8
        # values, discrete or continuous actions, nothing recorded): no JSON
        # and no dicts per step. Its steps carry no info text.
        self._fast = 0
        box = len(self._parts) == 1 and isinstance(self._parts[0][1], spaces.Box)
        kind = self._kinds[0][0] if len(self._kinds) == 1 else None
        if box and self._parts[0][1].dtype == np.float32 and kind in ("discrete", "continuous"):
            self._fast = self._env.vector_size()
            self._shape = self._parts[0][1].shape
            self._discrete = kind == "discrete"
            self._fast_episode = False

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
        if self._fast:
            first = self._env.reset_vector(int(seed))
            self._fast_episode = first is not None
            if first is not None:
                return np.frombuffer(first, dtype=np.float32).reshape(self._shape), {}
        raw, info = self._env.reset(int(seed))
        return self._obs(raw), _info(info)

    def step(self, action):
        if self._fast and self._fast_episode:
            if self._discrete:
                values = [float(action)]
            else:
                values = np.ravel(np.asarray(action, dtype=np.float32)).tolist()
            r = self._env.step_vector(values)
            if r is not None:
                obs, reward, terminated, truncated = r
                obs = np.frombuffer(obs, dtype=np.float32).reshape(self._shape)
                return obs, float(reward), terminated, truncated, {}
            # The plugin declined the fast path mid-episode: it cannot
            # continue this episode by `step`.
            raise PluginCrash("the plugin declined its fast path in the middle of an episode")
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


def _limits(limits):
    """`limits` (a dict of the plugin limits `ludus run --limit` sets:
    fuel, memory_bytes, timeout_ms, ...) as the extension takes them."""
    if limits is None:
        return None
    if not isinstance(limits, dict):
        raise TypeError(f"limits must be a dict, not {type(limits).__name__}")
    return json.dumps(limits)


def make(env=None, config="", record=None, limits=None, path=None):
    """A `gymnasium.Env` over the wasm env plugin at `env` (a path; `path=`
    is the same, as in `gymnasium.make("ludus/Wasm-v0", path=...)`).

    With `record="run.db"`, every episode is recorded there as `ludus run`
    records it (one run per env; `close()` ends it), so `ludus debug` and the
    IDE open the episodes a Python trainer played. `limits` overrides the
    plugin's sandbox limits, e.g. `{"fuel": 10**9, "timeout_ms": 2000}`.
    """
    return LudusEnv(_plugin_path(env, path), config, record, limits)


def _plugin_path(env, path):
    if (env is None) == (path is None):
        raise TypeError("give the env plugin's path once, as env= or path=")
    return env if env is not None else path


class LudusVectorEnv(VectorEnv):
    """`num_envs` copies of a vector env plugin stepped together through the
    contract's batched interface: one call into the sandbox steps them all.

    Autoreset is Gymnasium 1.x's `AutoresetMode.SAME_STEP`, which is what the
    contract does: a copy whose episode ends is reset in the same step, with
    the next seed of its sequence, and the observation returned for it is
    the new episode's first. The batched interface does not return the
    ended episode's last observation, so `info` has no `final_obs` (a
    trainer that bootstraps truncated episodes from it should use
    `vectorization_mode="sync"`, which steps one env per copy in
    `NEXT_STEP` mode). Nothing is recorded (`record=` uses "sync").
    """

    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP, "render_modes": []}

    def __init__(self, env, num_envs, config="", limits=None):
        single = LudusEnv(env, config, limits=limits)
        self.env_info = single.env_info
        self.num_envs = int(num_envs)
        self._batch = BatchEnv(str(env), self.num_envs, config, _limits(limits))
        self._size, self._width = self._batch.sizes()
        self.single_observation_space = single.observation_space
        self.single_action_space = single.action_space
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._shape = (self.num_envs,) + self.single_observation_space.shape
        single.close()

    def reset(self, *, seed=None, options=None):
        """New episodes: `seed` an int gives copy i the seed `seed + i` (as
        Gymnasium's vector envs do), a list one seed per copy."""
        super().reset(seed=seed if isinstance(seed, int) or seed is None else None)
        n = self.num_envs
        if seed is None:
            seeds = [int(s) for s in self.np_random.integers(0, 2**63 - 1, size=n)]
        elif isinstance(seed, int):
            seeds = [seed + i for i in range(n)]
        else:
            seeds = list(seed)
            if len(seeds) != n:
                raise ValueError(f"reset got {len(seeds)} seeds for {n} envs")
            fill = self.np_random.integers(0, 2**63 - 1, size=n)
            seeds = [int(fill[i]) if s is None else int(s) for i, s in enumerate(seeds)]
        first = self._batch.reset(seeds)
        return np.frombuffer(first, dtype=np.float32).reshape(self._shape), {}

    def step(self, actions):
        flat = np.ascontiguousarray(actions, dtype=np.float32).reshape(-1)
        obs, rewards, flags = self._batch.step(flat.tobytes())
        flags = np.frombuffer(flags, dtype=np.uint8)
        return (
            np.frombuffer(obs, dtype=np.float32).reshape(self._shape),
            np.frombuffer(rewards, dtype=np.float32).astype(np.float64),
            (flags & 1) != 0,
            (flags & 2) != 0,
            {},
        )


def make_vec(env=None, num_envs=1, config="", record=None, vectorization_mode=None, limits=None, path=None):
    """A `gymnasium.vector.VectorEnv` of `num_envs` copies of the plugin at
    `env` (or `path=`).

    `vectorization_mode`: "vector" (the default for envs with one vector
    observation: `LudusVectorEnv`, the contract's batched interface, one
    call per step of all copies, `SAME_STEP` autoreset), "sync" or "async"
    (Gymnasium's `SyncVectorEnv`/`AsyncVectorEnv` over one `LudusEnv` per
    copy, `NEXT_STEP` autoreset; the default for other envs and with
    `record`). With `record`, every copy's episodes are recorded (one run
    per copy)."""
    env = _plugin_path(env, path)
    if vectorization_mode is None:
        vectorization_mode = "sync"
        if record is None:
            try:
                return LudusVectorEnv(env, num_envs, config, limits)
            except ValueError as e:
                if "cannot be batched" not in str(e):
                    raise
    if vectorization_mode == "vector":
        if record is not None:
            raise ValueError('vectorization_mode="vector" does not record: use "sync" with record=')
        return LudusVectorEnv(env, num_envs, config, limits)
    fns = [lambda: LudusEnv(env, config, record, limits) for _ in range(num_envs)]
    if vectorization_mode == "async":
        return gym.vector.AsyncVectorEnv(fns)
    if vectorization_mode == "sync":
        return gym.vector.SyncVectorEnv(fns)
    raise ValueError(f'vectorization_mode must be "vector", "sync" or "async", not {vectorization_mode!r}')


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


# The example env plugins, registered as `ludus/NAME-v0`: file names.
EXAMPLES = {
    "CartPole": "cartpole.wasm",
    "Maze": "maze.wasm",
    "Desktop": "desktop.wasm",
    "ToolFs": "tool_fs.wasm",
    "WordEcho": "word_echo.wasm",
}


def example(name):
    """The path of an example env plugin ("CartPole", "Maze", ...): in the
    folder `LUDUS_PLUGINS` names, else the one the package ships
    (`ludus/envs/`)."""
    try:
        file = EXAMPLES[name]
    except KeyError:
        raise ValueError(f"no example env {name!r} (known: {', '.join(EXAMPLES)})") from None
    folders = []
    if os.environ.get("LUDUS_PLUGINS"):
        folders.append(Path(os.environ["LUDUS_PLUGINS"]))
    folders.append(Path(__file__).parent / "envs")
    for folder in folders:
        if (folder / file).is_file():
            return str(folder / file)
    raise FileNotFoundError(
        f"ludus/{name}-v0: {file} not found in {' or '.join(map(str, folders))}: "
        "install the ludus wheel (it ships the examples) or set LUDUS_PLUGINS to the folder "
        "of the built example plugins (plugins/target/wasm32-wasip2/release)"
    )


def _make_example(name):
    def entry(config="", record=None, limits=None, **kwargs):
        if kwargs:
            raise TypeError(f"unknown arguments: {sorted(kwargs)}")
        return LudusEnv(example(name), config, record, limits)

    return entry


def _make_vec_example(name):
    def entry(num_envs=1, config="", record=None, vectorization_mode=None, limits=None, **kwargs):
        kwargs.pop("vector_kwargs", None)
        if kwargs:
            raise TypeError(f"unknown arguments: {sorted(kwargs)}")
        return make_vec(example(name), num_envs, config, record, vectorization_mode, limits)

    return entry


def _register():
    # `gymnasium.make("ludus/Wasm-v0", path="PATH.wasm")` (or `env=`) for any plugin,
    # `gymnasium.make("ludus/CartPole-v0")` (and `gymnasium.make_vec`) for
    # the examples.
    if "ludus/Wasm-v0" not in gym.registry:
        gym.register(id="ludus/Wasm-v0", entry_point="ludus:make", vector_entry_point="ludus:make_vec")
    for name in EXAMPLES:
        env_id = f"ludus/{name}-v0"
        if env_id not in gym.registry:
            gym.register(
                id=env_id,
                entry_point=_make_example(name),
                vector_entry_point=_make_vec_example(name),
            )


_register()
