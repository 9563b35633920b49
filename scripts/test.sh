#!/usr/bin/env bash
# Sets up and runs every test: the plugins' own unit tests (native) and the
# workspace's unit and integration tests (real plugins, real SQLite files).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
(cd plugins && cargo test --quiet -p maze-kit)
cargo test --workspace
