#!/usr/bin/env bash
# Episodes/s through the PostgreSQL job queue with 1, 2 and 4 workers
# against one `ludus run --jobs 4` of the same episodes, for an env with a
# fixed per-step delay; and recording into PostgreSQL against SQLite.
#   bench/scale-out.sh [LUDUS] [EPISODES] [DELAY_MS]
# Starts its own throwaway PostgreSQL server (scripts/postgres.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
L="${1:-target/release/ludus}"
N="${2:-40}"
DELAY="${3:-20}"
P=plugins/target/wasm32-wasip2/release
export LD_LIBRARY_PATH="$PWD/.venv/libtorch/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
pg=$(mktemp -d)
work=$(mktemp -d)
trap 'bash scripts/postgres.sh stop "$pg" || true; rm -rf "$pg" "$work"' EXIT
URL=$(bash scripts/postgres.sh start "$pg")
base="${URL%/*}"
fresh() { # a new database: its URL
    PGPASSWORD="$(cat "$pg/password")" psql -h 127.0.0.1 -p "$(cat "$pg/port")" -U ludus -d postgres -qc "CREATE DATABASE $1" >/dev/null
    echo "$base/$1"
}
now() { python3 -c 'import time; print(time.monotonic())'; }
run=(--env $P/cartpole.wasm --agent $P/random_agent.wasm --episodes "$N" --seed 7 --env-step-delay-ms "$DELAY")
t0=$(now); "$L" run "${run[@]}" --jobs 4 --db "$work/local.db" --json >/dev/null; t1=$(now)
local_s=$(python3 -c "print($t1 - $t0)")
echo "ludus run --jobs 4: $N episodes in $(printf %.2f "$local_s") s ($(python3 -c "print(f'{$N / $local_s:.2f}')") episodes/s)"
for workers in 1 2 4; do
    db=$(fresh "w$workers")
    t0=$(now)
    "$L" run "${run[@]}" --db "$db" --workers --json >/dev/null &
    queued=$!
    for _ in $(seq "$workers"); do "$L" worker --db "$db" --until-empty 2>/dev/null & done
    wait "$queued"
    t1=$(now)
    wait
    s=$(python3 -c "print($t1 - $t0)")
    echo "$workers worker(s): $N episodes in $(printf %.2f "$s") s ($(python3 -c "print(f'{$N / $s:.2f}')") episodes/s)"
done
# Recording: the same run, no delay, into SQLite and into PostgreSQL.
frames() { # db -> frames recorded
    "$L" export "$1" --format jsonl --out "$work/x.jsonl" >/dev/null
    python3 -c "import json; print(sum(len(json.loads(l)['frames']) for l in open('$work/x.jsonl')))"
}
for env in cartpole desktop; do
    agent=random_agent
    [ "$env" = desktop ] && agent=desktop_solver
    r=(--env $P/$env.wasm --agent $P/$agent.wasm --episodes 200 --seed 3 --jobs 1)
    t0=$(now); "$L" run "${r[@]}" --db "$work/$env.db" --json >/dev/null; t1=$(now)
    db=$(fresh "rec_$env")
    t2=$(now); "$L" run "${r[@]}" --db "$db" --json >/dev/null; t3=$(now)
    f=$(frames "$work/$env.db")
    echo "$env: $f frames; SQLite $(python3 -c "print(f'{$f / ($t1 - $t0):,.0f}')") frames/s, PostgreSQL (played here, copied there) $(python3 -c "print(f'{$f / ($t3 - $t2):,.0f}')") frames/s"
done
