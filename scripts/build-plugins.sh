#!/usr/bin/env bash
# Builds every plugin under plugins/ (examples and test plugins) for wasm32-wasip2.
# Each plugin is built on its own so it gets only its own world's SDK feature.
set -euo pipefail
cd "$(dirname "$0")/../plugins"
if ! rustup target list --installed | grep -qx wasm32-wasip2; then
    echo "installing the wasm32-wasip2 target with rustup"
    rustup target add wasm32-wasip2
fi
crates=()
for manifest in examples/*/Cargo.toml tests/*/Cargo.toml; do
    # Only plugin crates (cdylib); maze-kit is a plain library.
    grep -q cdylib "$manifest" || continue
    crates+=("$(sed -n 's/^name = "\(.*\)"/\1/p' "$manifest" | head -1)")
done
for c in "${crates[@]}"; do
    cargo build --quiet --release --target wasm32-wasip2 -p "$c"
done
echo "built ${#crates[@]} plugins into plugins/target/wasm32-wasip2/release/"
