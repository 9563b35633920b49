"""Steps per second over a loopback WebSocket: `ludus serve` against
OpenEnv's own Python server (`openenv-core`'s `create_app` under uvicorn)
serving a comparable env: ludus's word-echo example against an echo env
written here on OpenEnv's `Environment` interface.

    .venv/openenv/bin/python bench/python/serve.py --ludus target/release/ludus \
        --env plugins/target/wasm32-wasip2/release/word_echo.wasm [--steps N] [--rounds 3]

One session, one client thread, raw frames (the `websockets` sync client),
so the figure is the server's round trip, not a client library's: requests
answered per second, a step or a reset (word-echo's episodes are one step
long, so half of its requests are resets, each a fresh sandboxed instance;
the echo env never ends). Prints one line per server (best of `--rounds`)
and the ratio.
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import textwrap
import time

from websockets.sync.client import connect

ECHO_APP = textwrap.dedent(
    """
    from typing import Optional
    from openenv.core.env_server.http_server import create_app
    from openenv.core.env_server.interfaces import Environment
    from openenv.core.env_server.types import Action, Observation, State

    class Say(Action):
        message: str

    class Heard(Observation):
        echoed_message: str = ""

    class Echo(Environment):
        SUPPORTS_CONCURRENT_SESSIONS = True

        def __init__(self):
            self._state = State(episode_id=None, step_count=0)

        def reset(self, seed: Optional[int] = None, episode_id: Optional[str] = None, **kwargs) -> Heard:
            self._state = State(episode_id=episode_id, step_count=0)
            return Heard(echoed_message="", done=False, reward=0.0)

        def step(self, action: Say, timeout_s=None, **kwargs) -> Heard:
            self._state.step_count += 1
            return Heard(echoed_message=action.message, done=False, reward=1.0)

        @property
        def state(self) -> State:
            return self._state

    app = create_app(Echo, Say, Heard, env_name="echo", max_concurrent_envs=4)
    """
)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(port, deadline=30.0):
    until = time.time() + deadline
    while time.time() < until:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"no server on port {port}")


def steps_per_second(port, steps, action):
    with connect(f"ws://127.0.0.1:{port}/ws") as ws:
        reset = json.dumps({"type": "reset", "data": {"seed": 1}})
        ws.send(reset)
        ws.recv()
        message = json.dumps({"type": "step", "data": action})
        started = time.perf_counter()
        trips = 0
        while trips < steps:
            ws.send(message)
            reply = json.loads(ws.recv())
            trips += 1
            if reply["type"] != "observation":
                raise RuntimeError(reply)
            if reply["data"]["done"]:
                ws.send(reset)
                ws.recv()
                trips += 1
        elapsed = time.perf_counter() - started
        ws.send(json.dumps({"type": "close"}))
    return trips / elapsed


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--ludus", required=True, help="the ludus binary")
    p.add_argument("--env", required=True, help="word_echo.wasm")
    p.add_argument("--steps", type=int, default=5000)
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args()
    ours = subprocess.Popen(
        [a.ludus, "serve", "--env", a.env, "--port", "0"], stdout=subprocess.PIPE, text=True
    )
    line = ours.stdout.readline()
    port = int(line.split("127.0.0.1:")[1].split()[0])
    with tempfile.TemporaryDirectory() as d:
        with open(os.path.join(d, "echo_app.py"), "w") as f:
            f.write(ECHO_APP)
        ref_port = free_port()
        ref = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "echo_app:app", "--port", str(ref_port), "--log-level", "warning"],
            cwd=d,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for(ref_port)
            ludus = max(steps_per_second(port, a.steps, {"TypeText": "hello"}) for _ in range(a.rounds))
            openenv = max(steps_per_second(ref_port, a.steps, {"message": "hello"}) for _ in range(a.rounds))
        finally:
            ref.terminate()
            ours.terminate()
            ref.wait()
            ours.wait()
    print(f"ludus serve (word-echo, wasm, sandboxed) {ludus:,.0f} requests/s; "
          f"OpenEnv create_app + uvicorn (echo, Python) {openenv:,.0f} requests/s; ludus x{ludus / openenv:.2f}")


if __name__ == "__main__":
    main()
