#!/usr/bin/env bash
# Everything ludus needs on a fresh machine with a Rust toolchain (rustup):
# the wasm32-wasip2 target, the example plugins, and PyTorch 2.11.0 (the
# libtorch that tch 0.24 links) in a local virtual env `.venv`.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v cargo >/dev/null 2>&1; then
    echo "error: cargo not found: install Rust with rustup (https://rustup.rs) first" >&2
    exit 1
fi
if ! rustup target list --installed | grep -qx wasm32-wasip2; then
    echo "installing the wasm32-wasip2 target with rustup"
    rustup target add wasm32-wasip2
fi
bash scripts/build-plugins.sh
bash scripts/setup-torch.sh
