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
gui_packages=(xvfb mesa-vulkan-drivers libvulkan1 libx11-xcb1 libxcursor1 libxi6 libxrandr2
    libxkbcommon0 libxkbcommon-x11-0)
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
        echo "installing ${missing[*]} with apt-get (for the IDE's window tests)"
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
        echo "warning: missing ${missing[*]} and no apt-get: install them for the IDE's window tests" >&2
    fi
fi
bash scripts/build-plugins.sh
bash scripts/setup-torch.sh
