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
# The IDE's window tests need an X server and a software Vulkan driver
# (eframe's wgpu renderer); winit loads the X11 libraries at run time.
# PostgreSQL: the scale-out store's tests start a throwaway server
# (scripts/postgres.sh).
gui_packages=(xvfb mesa-vulkan-drivers libvulkan1 libx11-xcb1 libxcursor1 libxi6 libxrandr2
    libxkbcommon0 libxkbcommon-x11-0 postgresql)
missing=()
if command -v dpkg-query >/dev/null 2>&1; then
    for p in "${gui_packages[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
fi
if ((${#missing[@]})); then
    if command -v apt-get >/dev/null 2>&1; then
        sudo=""
        [ "$(id -u)" = 0 ] || sudo="sudo"
        echo "installing ${missing[*]} with apt-get (for the IDE's window tests and PostgreSQL's)"
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
        echo "warning: missing ${missing[*]} and no apt-get: install them for the IDE's window tests and PostgreSQL's" >&2
    fi
fi
bash scripts/build-plugins.sh
bash scripts/setup-torch.sh
# Plugins in Python and JavaScript: componentize-py and gymnasium (for
# `ludus bench-lang`'s comparison) in .venv, componentize-js from the
# committed package-lock.json in plugins/sdk-js/node_modules. Quick when done.
COMPONENTIZE_PY_VERSION=0.25.1
GYMNASIUM_VERSION=1.4.0
if [ ! -x .venv/bin/python ]; then
    if ! command -v python3 >/dev/null 2>&1; then
        echo "error: python3 not found: install Python 3.11+ for Python plugins (componentize-py)" >&2
        exit 1
    fi
    python3 -m venv .venv
fi
have_py() { # package version
    [ "$(.venv/bin/python -m pip show "$1" 2>/dev/null | sed -n 's/^Version: //p')" = "$2" ]
}
if ! have_py componentize-py "$COMPONENTIZE_PY_VERSION" || ! have_py gymnasium "$GYMNASIUM_VERSION"; then
    echo "installing componentize-py==$COMPONENTIZE_PY_VERSION and gymnasium==$GYMNASIUM_VERSION into .venv"
    .venv/bin/python -m pip install --quiet --disable-pip-version-check \
        "componentize-py==$COMPONENTIZE_PY_VERSION" "gymnasium==$GYMNASIUM_VERSION"
fi
# `ludus export`'s tests read its Parquet with pyarrow and its OTLP JSON
# with OpenTelemetry's protobuf schema; `ludus.open` gives pandas tables.
PYARROW_VERSION=22.0.0
OTEL_PROTO_VERSION=1.39.1
PANDAS_VERSION=2.3.3
if ! have_py pyarrow "$PYARROW_VERSION" || ! have_py opentelemetry-proto "$OTEL_PROTO_VERSION" \
    || ! have_py pandas "$PANDAS_VERSION"; then
    echo "installing pyarrow==$PYARROW_VERSION, opentelemetry-proto==$OTEL_PROTO_VERSION and pandas==$PANDAS_VERSION into .venv"
    .venv/bin/python -m pip install --quiet --disable-pip-version-check \
        "pyarrow==$PYARROW_VERSION" "opentelemetry-proto==$OTEL_PROTO_VERSION" "pandas==$PANDAS_VERSION"
fi
# The `ludus` Python package (python/: a pyo3 extension built by maturin),
# installed into .venv in development mode; rebuilt when its sources change.
MATURIN_VERSION=1.9.6
if ! have_py maturin "$MATURIN_VERSION"; then
    echo "installing maturin==$MATURIN_VERSION into .venv"
    .venv/bin/python -m pip install --quiet --disable-pip-version-check "maturin==$MATURIN_VERSION"
fi
# The tests import the extension that cargo builds with them (it shares
# their build), so CI skips this second build of the dependency tree.
if [ -z "${CI:-}" ]; then
    echo "building the ludus Python package into .venv (maturin develop)"
    VIRTUAL_ENV="$PWD/.venv" .venv/bin/maturin develop --quiet --manifest-path python/Cargo.toml >/dev/null 2>&1 \
        || { echo "error: building the Python package failed: run maturin develop --manifest-path python/Cargo.toml to see why" >&2; exit 1; }
fi
if ! command -v npm >/dev/null 2>&1; then
    echo "error: npm not found: install Node.js 20+ for JavaScript plugins (componentize-js)" >&2
    exit 1
fi
js_tool=plugins/sdk-js/node_modules/.bin/componentize-js
if [ ! -x "$js_tool" ] || [ plugins/sdk-js/package-lock.json -nt plugins/sdk-js/node_modules/.package-lock.json ]; then
    echo "installing componentize-js into plugins/sdk-js/node_modules (npm ci)"
    (cd plugins/sdk-js && npm ci --no-audit --no-fund --loglevel=error)
fi
# Language models for LLM agents: llama.cpp's server, SmolLM2-135M and tiny
# test models, into .venv and models/ (see scripts/setup-models.sh).
bash scripts/setup-models.sh
