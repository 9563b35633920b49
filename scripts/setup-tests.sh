#!/usr/bin/env bash
# What the tests need beyond scripts/setup.sh (scripts/test.sh runs both):
# OpenEnv's client for `ludus serve`'s tests and the wheelhouse for the
# wheel test. Quick when done.
set -euo pipefail
cd "$(dirname "$0")/.."
GYMNASIUM_VERSION=$(sed -n "s/^GYMNASIUM_VERSION=//p" scripts/setup.sh)
# `ludus serve`'s tests talk to it with OpenEnv's own client, in a venv of
# its own (its dependencies are not the project's).
OPENENV_VERSION=0.3.0
if [ ! -x .venv/openenv/bin/python ]; then
    python3 -m venv .venv/openenv
fi
if [ "$(.venv/openenv/bin/python -m pip show openenv-core 2>/dev/null | sed -n 's/^Version: //p')" != "$OPENENV_VERSION" ]; then
    echo "installing openenv-core==$OPENENV_VERSION into .venv/openenv"
    .venv/openenv/bin/python -m pip install --quiet --disable-pip-version-check "openenv-core==$OPENENV_VERSION"
fi
# The wheel test installs the package into a fresh venv without the
# network: its dependencies wait in .venv/wheelhouse.
if [ ! -f .venv/wheelhouse/.complete-$GYMNASIUM_VERSION ]; then
    echo "downloading the Python package's dependencies into .venv/wheelhouse"
    .venv/bin/python -m pip download --quiet --disable-pip-version-check -d .venv/wheelhouse \
        "gymnasium==$GYMNASIUM_VERSION" numpy
    touch .venv/wheelhouse/.complete-$GYMNASIUM_VERSION
fi
