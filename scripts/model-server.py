"""Serves a GGUF model with llama.cpp's own server (the `xllamacpp` wheel) on
a loopback port: OpenAI-compatible `/v1/chat/completions`, JSON-schema
response formats, and images when a projector (`--mmproj`) is given.

usage: model-server.py MODEL.gguf [--port P] [--threads N] [--slots N]
                       [--ctx N] [--mmproj FILE]
Port 0 (the default) picks a free one. Once the server answers `/health` it
prints `listening on http://127.0.0.1:PORT` on stdout; it stops on SIGTERM
or SIGINT. One thread by default: with the other core busy, more threads
make llama.cpp slower, not faster."""

import argparse
import os
import signal
import socket
import sys
import time
import urllib.request


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def main() -> int:
    ap = argparse.ArgumentParser(description="Serve a GGUF model with llama.cpp's server.")
    ap.add_argument("model")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--slots", type=int, default=1)
    ap.add_argument("--ctx", type=int, default=4096)
    ap.add_argument("--mmproj")
    a = ap.parse_args()
    for f in [a.model] + ([a.mmproj] if a.mmproj else []):
        if not os.path.isfile(f):
            print(f"error: model file {f} not found: run scripts/setup.sh (it installs and makes the models in models/)",
                  file=sys.stderr)
            return 2
    try:
        import xllamacpp as xlc
    except ImportError:
        print("error: xllamacpp is not installed in this Python: run scripts/setup.sh", file=sys.stderr)
        return 2
    port = a.port or free_port()
    p = xlc.CommonParams()
    p.model.path = a.model
    p.hostnames = ["127.0.0.1"]
    p.port = port
    # Each slot gets the whole context.
    p.n_ctx = a.ctx * max(1, a.slots)
    p.n_parallel = max(1, a.slots)
    p.cpuparams.n_threads = a.threads
    p.cpuparams_batch.n_threads = a.threads
    p.use_jinja = True
    if a.mmproj:
        p.mmproj.path = a.mmproj
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    server = xlc.Server(p)
    deadline = time.time() + 120
    while not healthy(port):
        if stop or time.time() > deadline:
            print("error: the model server did not become healthy within 120 s", file=sys.stderr)
            return 1
        time.sleep(0.05)
    print(f"listening on http://127.0.0.1:{port}", flush=True)
    while not stop:
        time.sleep(0.1)
    del server
    return 0


if __name__ == "__main__":
    sys.exit(main())
