#!/usr/bin/env bash
# Sets up and runs every test: the plugins' own unit tests (native) and the
# workspace's unit and integration tests (real plugins, real SQLite files, a
# real PostgreSQL server).
# Ends with one line totalling every test binary's results.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/setup-tests.sh
log=$(mktemp)
# A throwaway PostgreSQL server for the scale-out tests, stopped at the end.
pg=$(mktemp -d)
trap 'bash scripts/postgres.sh stop "$pg" || true; rm -rf "$pg" "$log"' EXIT
LUDUS_TEST_POSTGRES=$(bash scripts/postgres.sh start "$pg")
export LUDUS_TEST_POSTGRES
(cd plugins && { cargo test -p maze-kit -p desktop-kit && cargo test -p cartpole --lib && cargo test -p ludus-sdk --features env --lib; } 2>&1) | tee -a "$log"
cargo test --workspace --no-fail-fast 2>&1 | tee -a "$log"
# The container's Kubernetes manifests against Kubernetes' schemas.
bash scripts/check-deploy.sh 2>&1 | tee -a "$log"
passed=$(grep -o '[0-9]* passed' "$log" | awk '{s += $1} END {print s + 0}')
failed=$(grep -o '[0-9]* failed' "$log" | awk '{s += $1} END {print s + 0}')
echo "tests: $passed passed, $failed failed"
