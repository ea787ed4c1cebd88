#!/usr/bin/env bash
# The test command: installs what the tests need, then runs every test (unit + integration).
# Integration tests need root (network namespaces); without it they skip and say why.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-test-env.sh
exec "${PYTHON:-python3}" -m pytest "$@"
