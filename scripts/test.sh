#!/usr/bin/env bash
# The test command: installs what the tests need (scripts/setup-test-env.sh: apt packages and the
# project virtual environment .venv/), then runs every test (unit + integration) with the venv's
# Python. Arguments go to pytest. Integration tests need root (network namespaces); without it they
# skip and say why.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-test-env.sh
exec .venv/bin/python -m pytest "$@"
