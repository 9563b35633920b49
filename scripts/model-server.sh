#!/usr/bin/env bash
# Serves a GGUF model with llama.cpp's server on a loopback port (see
# scripts/model-server.py): `scripts/model-server.sh models/smollm2-135m-instruct.gguf`
# prints `listening on http://127.0.0.1:PORT`; pass that URL to `ludus run --model`.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
if [ ! -x "$root/.venv/bin/python" ]; then
    echo "error: $root/.venv is missing: run scripts/setup.sh first" >&2
    exit 2
fi
exec "$root/.venv/bin/python" "$root/scripts/model-server.py" "$@"
