#!/usr/bin/env bash
# Builds the `ludus` Python package as a wheel into dist/ (or $1): the
# extension in release mode (WHEEL_PROFILE=dev: unoptimised, as the tests
# build it), with the example env plugins inside it, so that
# `pip install dist/ludus-*.whl` needs nothing else of this checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-dist}"
release=plugins/target/wasm32-wasip2/release
envs=python/python/ludus/envs
mkdir -p "$envs"
for name in cartpole maze desktop tool_fs word_echo; do
    if [ ! -f "$release/$name.wasm" ]; then
        echo "error: $release/$name.wasm not built: run scripts/build-plugins.sh" >&2
        exit 1
    fi
    cp "$release/$name.wasm" "$envs/"
done
export LIBTORCH="${LIBTORCH:-$PWD/.venv/libtorch}"
if [ "${WHEEL_PROFILE:-release}" = dev ]; then
    .venv/bin/maturin build --quiet --manifest-path python/Cargo.toml --out "$out"
else
    .venv/bin/maturin build --release --strip --quiet --manifest-path python/Cargo.toml --out "$out"
fi
ls "$out"/ludus-*.whl
