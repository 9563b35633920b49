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
run=(--env $P/cartpole.wasm --agent $P/random_agent.wasm --seed 7 --env-step-delay-ms "$DELAY")
rate() { python3 -c "print(f'{$1 / ($3 - $2):,.2f}')"; }
# Workers that wait for jobs, as a Deployment's would; stopped after.
pids=()
workers() { # db count
    pids=()
    for _ in $(seq "$2"); do "$L" worker --db "$1" 2>>"${WORKER_LOG:-/dev/null}" & pids+=($!); done
}
stop_workers() { kill "${pids[@]}" 2>/dev/null || echo "a worker had stopped early (WORKER_LOG=FILE keeps their errors)" >&2; wait "${pids[@]}" 2>/dev/null || true; }
"$L" run "${run[@]}" --episodes 1 --db "$work/warm.db" --json >/dev/null # compile cache
for jobs in 1 4; do
    t0=$(now); "$L" run "${run[@]}" --episodes "$N" --jobs "$jobs" --db "$work/local$jobs.db" --json >/dev/null; t1=$(now)
    echo "ludus run --jobs $jobs: $N episodes in $(printf %.2f "$(python3 -c "print($t1 - $t0)")") s ($(rate "$N" "$t0" "$t1") episodes/s)"
    [ "$jobs" = 1 ] && serial="$t0 $t1"
done
for n in 1 2 4; do
    db=$(fresh "w$n")
    t0=$(now)
    workers "$db" "$n"
    "$L" run "${run[@]}" --episodes "$N" --db "$db" --workers --json >/dev/null
    t1=$(now)
    stop_workers
    echo "$n worker(s): $N episodes in $(printf %.2f "$(python3 -c "print($t1 - $t0)")") s ($(rate "$N" "$t0" "$t1") episodes/s)"
    if [ "$n" = 1 ]; then
        read -r s0 s1 <<<"$serial"
        echo "  queue overhead per episode (1 worker against ludus run --jobs 1): $(python3 -c "print(f'{(($t1 - $t0) - ($s1 - $s0)) / $N * 1000:.0f}')") ms"
    fi
done
# Recording: the same episodes, no delay, into a SQLite file, into
# PostgreSQL from `ludus run` (played here, copied there), and into
# PostgreSQL by one worker (each episode's frames in its job's transaction).
for env in cartpole desktop; do
    r=(--env $P/$env.wasm --agent $P/random_agent.wasm --seed 3)
    "$L" run "${r[@]}" --episodes 1 --db "$work/warm-$env.db" --json >/dev/null
    t0=$(now); "$L" run "${r[@]}" --episodes 300 --jobs 1 --db "$work/$env.db" --json >"$work/$env.json"; t1=$(now)
    f=$(python3 -c "import json; print(sum(e['length'] for e in json.load(open('$work/$env.json'))['episodes']))")
    db=$(fresh "rec_$env")
    t2=$(now); "$L" run "${r[@]}" --episodes 300 --jobs 1 --db "$db" --json >/dev/null; t3=$(now)
    db=$(fresh "recw_$env")
    t4=$(now); workers "$db" 1; "$L" run "${r[@]}" --episodes 300 --db "$db" --workers --json >/dev/null; t5=$(now); stop_workers
    echo "$env: $f frames; frames/s: SQLite $(rate "$f" "$t0" "$t1"), PostgreSQL copied $(rate "$f" "$t2" "$t3"), PostgreSQL by 1 worker $(rate "$f" "$t4" "$t5")"
done
