#!/usr/bin/env bash
# Validates deploy/k8s/*.yaml against Kubernetes' own schemas with
# kubernetes-validate (from PyPI, in .venv/deploy). There is no cluster
# here: this checks the manifests' shape, not that they run.
set -euo pipefail
cd "$(dirname "$0")/.."
KV_VERSION=1.37.0
if [ ! -x .venv/deploy/bin/kubernetes-validate ]; then
    python3 -m venv .venv/deploy
    .venv/deploy/bin/python -m pip install --quiet --disable-pip-version-check "kubernetes-validate==$KV_VERSION"
fi
.venv/deploy/bin/kubernetes-validate --strict deploy/k8s/*.yaml
