#!/usr/bin/env bash
# On a machine with a GPU, from the repository root, after scripts/gpu-pack.sh's
# .gpu/1, .gpu/2 and .gpu/3 arrived: LLM training of SmolLM2-135M on CUDA in
# f32, bf16, bf16 with offload and async bf16 (`ludus bench llm-train`),
# on word-echo and on the maze; then the built-in backend serving the maze
# agent on that device (`ludus bench backend`, f32 and bf16). libtorch is the one of this machine's
# PyTorch (the same version the binary was built against). Results go to
# OUT (default .gpu/out): one JSON file per task and per backend dtype, and the log.
#   UPDATES=N (default 20)   TASKS="word-echo maze"   DEVICE=cuda (cpu to try
#   the script itself on a machine without a GPU)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-.gpu/out}
mkdir -p "$out" .gpu/run
python=${PYTHON:-python3}
torch_lib=$("$python" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
export LD_LIBRARY_PATH="$torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
gunzip -c .gpu/1/ludus.gz > .gpu/run/ludus
chmod +x .gpu/run/ludus
cat .gpu/1/model.part .gpu/2/model.part .gpu/3/model.part > .gpu/run/smollm2.gguf
echo "$(cat .gpu/1/model.sha256)  .gpu/run/smollm2.gguf" | sha256sum -c --quiet
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt" || true
for task in ${TASKS:-word-echo maze}; do
    .gpu/run/ludus bench llm-train --model .gpu/run/smollm2.gguf --plugins .gpu/1/plugins \
        --task "$task" --updates "${UPDATES:-20}" --device "${DEVICE:-cuda}" --json \
        > "$out/llm-train-$task.json" 2> >(tee -a "$out/log.txt" >&2)
    cat "$out/llm-train-$task.json"
done
# `bench backend` reads its plugins from the build folder.
mkdir -p plugins/target/wasm32-wasip2/release
cp .gpu/1/plugins/*.wasm plugins/target/wasm32-wasip2/release/
for dtype in f32 bf16; do
    .gpu/run/ludus bench backend --model "policy:.gpu/run/smollm2.gguf,dtype=$dtype,device=${DEVICE:-cuda}" --json \
        > "$out/backend-$dtype.json" 2> >(tee -a "$out/log.txt" >&2)
    cat "$out/backend-$dtype.json"
done
