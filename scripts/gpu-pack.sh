#!/usr/bin/env bash
# Packs what the LLM training figures need on a machine with a GPU but no
# Rust, no network and room for about 60 MB a transfer: the release `ludus`
# (stripped, gzipped), the four plugins the two tasks use, and SmolLM2's
# GGUF in parts. Writes .gpu/1, .gpu/2 and .gpu/3, each under 60 MB; copy
# all three to the GPU machine's checkout, then run scripts/gpu-bench.sh
# there. Run from the repository root after scripts/setup.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p ludus
rm -rf .gpu
mkdir -p .gpu/1/plugins .gpu/2 .gpu/3
strip -o .gpu/ludus target/release/ludus
gzip -9 -c .gpu/ludus > .gpu/1/ludus.gz
rm .gpu/ludus
for p in word_echo llm_text_agent maze llm_maze_agent; do
    cp "plugins/target/wasm32-wasip2/release/$p.wasm" .gpu/1/plugins/
done
model=models/smollm2-135m-instruct.gguf
sha256sum "$model" | awk '{print $1}' > .gpu/1/model.sha256
# The model in three parts: the first beside the binary, which is the
# biggest file of .gpu/1.
size=$(stat -L -c %s "$model")
first=$(( 56 * 1024 * 1024 - $(stat -c %s .gpu/1/ludus.gz) ))
if [ "$first" -lt 0 ]; then first=0; fi
rest=$(( (size - first + 1) / 2 ))
dd if="$model" of=.gpu/1/model.part bs=4M count="$first" iflag=count_bytes status=none
dd if="$model" of=.gpu/2/model.part bs=4M skip="$first" count="$rest" iflag=skip_bytes,count_bytes status=none
dd if="$model" of=.gpu/3/model.part bs=4M skip=$(( first + rest )) iflag=skip_bytes status=none
du -sh .gpu/1 .gpu/2 .gpu/3
