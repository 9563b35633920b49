#!/usr/bin/env bash
# Sets up, builds, and runs the main job on the embedded default: the example
# plugins in `ludus run` (an LLM agent against a local SmolLM2 among them),
# recorded into ./ludus.db.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release -p ludus
P=plugins/target/wasm32-wasip2/release
LUDUS=target/release/ludus
echo "== CartPole, random agent, sparse success reward"
$LUDUS run --env $P/cartpole.wasm --agent $P/random_agent.wasm --reward $P/sparse_reward.wasm \
    --episodes 100 --seed 1 --db ludus.db
echo "== Maze with keys and doors, memory agent (run twice: the second run replays what it remembered)"
for i in 1 2; do
    $LUDUS run --env $P/maze.wasm --env-config size=15,doors=2 --agent $P/memory_agent.wasm \
        --reward $P/distance_reward.wasm --episodes 20 --seed 1 --db ludus.db
done
echo "== An LLM agent on the maze: SmolLM2-135M served by llama.cpp (every model call recorded in its frame)"
# The server's own log goes to .demo-model-server.log.
scripts/model-server.sh models/smollm2-135m-instruct.gguf > .demo-model-server.out 2> .demo-model-server.log &
server=$!
trap 'kill $server 2>/dev/null || true; rm -f .demo-model-server.out' EXIT
for _ in $(seq 1 120); do
    grep -q '^listening on ' .demo-model-server.out 2>/dev/null && break
    kill -0 $server 2>/dev/null || { echo "error: the model server did not start" >&2; exit 1; }
    sleep 0.5
done
url=$(sed -n 's/^listening on //p' .demo-model-server.out)
$LUDUS run --env $P/maze.wasm --env-config size=7,doors=0,max_steps=30 --agent $P/llm_maze_agent.wasm \
    --model "$url" --episodes 4 --jobs 1 --seed 1 --db ludus.db
kill $server 2>/dev/null || true
echo "== PPO on CartPole with \`ludus train\` (metrics and every sampled episode into ludus-train.db)"
rm -rf ludus-train.db ludus-train.db-wal ludus-train.db-shm ludus-train-ppo-cartpole-checkpoints
$LUDUS train configs/ppo-cartpole.toml --db ludus-train.db | tail -2
echo "== Summary"
echo "ludus.db: the CartPole run, the two maze runs and the LLM maze run above; stored agent memory: $($LUDUS memory list ludus.db /agent | wc -l) paths"
echo "ludus-train.db: the PPO run's metrics and every episode it sampled; checkpoints in ludus-train-ppo-cartpole-checkpoints/"
# Then the IDE on what was just recorded, when there is a display to show it on.
if [ -n "${DISPLAY:-}" ] || [ -n "${WAYLAND_DISPLAY:-}" ]; then
    echo "== opening the IDE on ludus.db"
    $LUDUS ide ludus.db
else
    echo "no display here (neither DISPLAY nor WAYLAND_DISPLAY is set): open the IDE on a desktop with"
    echo "    $LUDUS ide ludus.db          # runs, arena, training, workspace, debugger"
    echo "    $LUDUS ide ludus-train.db    # the PPO run: Runs tab, then Show training curves"
    echo "or, in a virtual X server: xvfb-run $LUDUS ide ludus.db"
fi
