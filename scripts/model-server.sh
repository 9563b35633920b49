#!/usr/bin/env bash
# Serves a GGUF model with llama.cpp's server on a loopback port (see
# scripts/model-server.py): `scripts/model-server.sh models/smollm2-135m-instruct.gguf`
# prints `listening on http://127.0.0.1:PORT`; pass that URL to `ludus run --model`.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
py="$root/.venv/bin/python"
if [ ! -x "$py" ]; then
    echo "error: $root/.venv is missing: run scripts/setup.sh first" >&2
    exit 2
fi
if [ ! -d "$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/xllamacpp" ]; then
    echo "error: xllamacpp (llama.cpp's server) is not installed in $root/.venv: run scripts/setup.sh first" >&2
    exit 2
fi
exec "$py" "$root/scripts/model-server.py" "$@"
