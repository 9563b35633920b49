#!/usr/bin/env bash
# Makes `.venv/libtorch` point at a PyTorch 2.11.0 install (what tch 0.24
# links). `.cargo/config.toml` points torch-sys there (LIBTORCH), and the
# trainer's and app's build scripts bake its lib/ folder in as an rpath, so a
# plain `cargo build` works and the binary runs without LD_LIBRARY_PATH.
# Idempotent: does nothing when the link already points at torch 2.11.0.
# Uses a python3 that already has torch 2.11.0 (e.g. a GPU machine's), else
# creates the virtual env `.venv` and pip-installs torch there (~4.6 GB).
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH_VERSION=2.11.0
probe='import torch, os; print(torch.__version__.split("+")[0]); print(os.path.dirname(torch.__file__))'
link=.venv/libtorch
ok() { [ -f "$1/lib/libtorch_cpu.so" ] && [ -d "$1/include/torch" ]; }
if [ -L "$link" ] && ok "$link" && [ -f .venv/torch-version ] && [ "$(cat .venv/torch-version)" = "$TORCH_VERSION" ]; then
    exit 0
fi
find_torch() { # python -> torch dir, when it has the right version
    local out
    out=$("$1" -c "$probe" 2>/dev/null) || return 1
    [ "$(sed -n 1p <<<"$out")" = "$TORCH_VERSION" ] || return 1
    sed -n 2p <<<"$out"
}
dir=""
if [ -x .venv/bin/python ]; then
    dir=$(find_torch .venv/bin/python) || dir=""
fi
if [ -z "$dir" ] && [ ! -x .venv/bin/python ] && command -v python3 >/dev/null 2>&1; then
    dir=$(find_torch python3) || dir=""
fi
if [ -z "$dir" ]; then
    if ! command -v python3 >/dev/null 2>&1; then
        echo "error: python3 not found: install Python 3.10+ so that setup can pip-install torch==$TORCH_VERSION" >&2
        exit 1
    fi
    # The install needs its 4.6 GB plus room to unpack; say so before pip
    # fails halfway with "No space left on device".
    free_kb=$(df -Pk . | awk 'NR==2 {print $4}')
    if [ -n "$free_kb" ] && [ "$free_kb" -lt $((7 * 1024 * 1024)) ]; then
        echo "error: torch==$TORCH_VERSION needs about 7 GB free to install, and $(pwd) has $((free_kb / 1024)) MB: free some disk and run scripts/setup.sh again" >&2
        exit 1
    fi
    [ -x .venv/bin/python ] || python3 -m venv .venv
    echo "installing torch==$TORCH_VERSION into .venv (about 4.6 GB, once)"
    # No cache: a cached copy of the wheels would double what the install takes.
    .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-cache-dir "torch==$TORCH_VERSION"
    dir=$(find_torch .venv/bin/python) || {
        echo "error: torch==$TORCH_VERSION did not install into .venv: remove .venv and run scripts/setup.sh again" >&2
        exit 1
    }
fi
mkdir -p .venv
ln -sfn "$dir" "$link"
echo "$TORCH_VERSION" > .venv/torch-version
echo "libtorch: $link -> $dir"
