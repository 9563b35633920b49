"""Serves a GGUF model with llama.cpp's own server (the `xllamacpp` wheel) on
a loopback port: OpenAI-compatible `/v1/chat/completions`, JSON-schema
response formats, images when a projector (`--mmproj`) is given, and
Prometheus counters on `/metrics`.

usage: model-server.py MODEL.gguf [--port P] [--threads N] [--slots N]
                       [--ctx N] [--mmproj FILE]
Port 0 (the default) lets the server pick a free one. Once the server answers
`/health` it prints one line, `listening on http://127.0.0.1:PORT`, on stdout;
it stops on SIGTERM or SIGINT and exits 0. llama.cpp's own log goes to stderr.
One thread by default: with the other core busy, more threads make llama.cpp
slower, not faster. Temperature 0 is only reproducible with one slot (the
default) and `"cache_prompt": false` in the request."""

import argparse
import os
import signal
import sys
import time
import urllib.parse
import urllib.request

SETUP = "run scripts/setup-models.sh (or scripts/setup.sh) to install and make the models in models/"


def healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def main() -> int:
    ap = argparse.ArgumentParser(description="Serve a GGUF model with llama.cpp's server on 127.0.0.1.")
    ap.add_argument("model", help="the model, a GGUF file")
    ap.add_argument("--port", type=int, default=0, help="port on 127.0.0.1; 0 (the default) picks a free one")
    ap.add_argument("--mmproj", help="image projector (GGUF) for image_url parts")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads (default 1)")
    ap.add_argument("--slots", type=int, default=1, help="requests served at once (default 1)")
    ap.add_argument("--ctx", type=int, default=4096, help="context tokens per slot (default 4096)")
    a = ap.parse_args()
    for what, f in [("model", a.model), ("image projector", a.mmproj)]:
        if f is not None and not os.path.isfile(f):
            print(f"error: {what} file {f} not found: {SETUP}", file=sys.stderr)
            return 2
    try:
        import xllamacpp as xlc
    except ImportError:
        print(f"error: xllamacpp is not installed in {sys.executable}: run scripts/setup.sh", file=sys.stderr)
        return 2

    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))

    p = xlc.CommonParams()
    p.model.path = a.model
    if a.mmproj:
        p.mmproj.path = a.mmproj
    p.hostnames = ["127.0.0.1"]
    p.port = a.port  # llama.cpp binds any free port for 0
    slots = max(1, a.slots)
    p.n_parallel = slots
    p.n_ctx = max(256, a.ctx) * slots  # the context is shared out among the slots
    p.cpuparams.n_threads = max(1, a.threads)
    p.cpuparams_batch.n_threads = max(1, a.threads)
    p.use_jinja = True
    p.endpoint_metrics = True
    try:
        server = xlc.Server(p)  # loads the model and starts listening
    except RuntimeError as e:
        print(f"error: llama.cpp could not serve {a.model} on 127.0.0.1:{a.port} ({e}); "
              "its log above says why", file=sys.stderr)
        return 1
    port = urllib.parse.urlsplit(server.listening_address).port or a.port
    deadline = time.monotonic() + 120
    while not healthy(port):
        if stop:
            del server
            return 0
        if time.monotonic() > deadline:
            print(f"error: the model server on port {port} did not answer /health within 120 s", file=sys.stderr)
            return 1
        time.sleep(0.02)
    print(f"listening on http://127.0.0.1:{port}", flush=True)
    while not stop:
        time.sleep(0.1)
    del server  # stops the HTTP server and the generation loop
    return 0


if __name__ == "__main__":
    sys.exit(main())
