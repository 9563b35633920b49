#!/usr/bin/env bash
# Runs the fuzz targets under fuzz/ (cargo fuzz, libFuzzer) for SECONDS each
# (default 120): `scripts/fuzz.sh [SECONDS] [TARGET...]`. Targets: frame_chunk,
# suite_file, train_config, cel, model_response. A crash is left by cargo
# fuzz in fuzz/artifacts/TARGET/; copy it to fuzz/regressions/TARGET/ once
# fixed, and the ordinary tests replay it. Needs cargo-fuzz (installed here
# when missing) and a nightly toolchain, or the stable one with
# RUSTC_BOOTSTRAP=1, which this script sets when no nightly is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-120}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(frame_chunk suite_file train_config cel model_response)
bash scripts/setup-torch.sh >/dev/null
export LIBTORCH="$PWD/.venv/libtorch"
# The targets link libtorch through the trainer (the train config target
# parses configs there), and cargo fuzz's binaries carry no run path to it.
export LD_LIBRARY_PATH="$LIBTORCH/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
if ! command -v cargo-fuzz >/dev/null 2>&1; then
    echo "installing cargo-fuzz (once)"
    cargo install cargo-fuzz --locked
fi
toolchain=()
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    toolchain=(+nightly)
else
    export RUSTC_BOOTSTRAP=1
fi
for t in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$t"
    # Start from the kept regressions: they are the interesting inputs.
    if [ -d "fuzz/regressions/$t" ]; then
        cp -n fuzz/regressions/"$t"/* "fuzz/corpus/$t/" 2>/dev/null || true
    fi
    echo "fuzzing $t for ${secs}s"
    # The address sanitizer adds little to safe Rust and doubles the build;
    # libFuzzer still catches panics, aborts, stack overflows and leaks of time.
    cargo "${toolchain[@]}" fuzz run --fuzz-dir fuzz --sanitizer none "$t" "fuzz/corpus/$t" -- \
        -max_total_time="$secs" -rss_limit_mb=4096 -timeout=10 -max_len=65536
done
