#!/usr/bin/env bash
# The test command: scripts/setup-test-env.sh (what it installs on the machine: README "Tests"), then
# every test with the venv's Python.  Arguments go to pytest.  Tests that need root (network
# namespaces, mounts, other users) skip without it and say why; under CI=true a skip for a missing
# prerequisite fails instead (tests/conftest.py).
#
# Nothing is written into the checkout: bytecode goes to a temp dir (PYTHONPYCACHEPREFIX), pytest's
# cache is off, Hypothesis keeps its files in a temp dir.
#
# CNI_IPAM_COVERAGE=1: measure coverage, in the processes the tests start too (the plugin, the admin
# commands): coverage's .pth in the venv starts it wherever COVERAGE_PROCESS_START is set; the data
# files go to a temp dir; a summary per file is printed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-test-env.sh

TMP_DIRS=()
# shellcheck disable=SC2317  # run by the EXIT trap
cleanup() { [ ${#TMP_DIRS[@]} -eq 0 ] || rm -rf "${TMP_DIRS[@]}"; }
trap cleanup EXIT
PYTHONPYCACHEPREFIX=$(mktemp -d /tmp/cni-ipam-pycache.XXXXXX)
TMP_DIRS+=("$PYTHONPYCACHEPREFIX")
export PYTHONPYCACHEPREFIX

if [ "${CNI_IPAM_COVERAGE:-0}" = 1 ]; then
  COV_DIR=$(mktemp -d /tmp/cni-ipam-coverage.XXXXXX)
  TMP_DIRS+=("$COV_DIR")
  chmod 1777 "$COV_DIR"  # tests run the plugin as other users too
  export COVERAGE_PROCESS_START="$PWD/pyproject.toml" COVERAGE_FILE="$COV_DIR/coverage"
fi

rc=0
.venv/bin/python -m pytest "$@" || rc=$?

if [ -n "${COV_DIR:-}" ]; then
  unset COVERAGE_PROCESS_START
  echo "== coverage of cni_ipam (this process and every Python process the tests started)"
  if .venv/bin/python -m coverage combine -q 2>/dev/null; then
    .venv/bin/python -m coverage report --rcfile=pyproject.toml || true
  else
    echo "coverage: no data collected" >&2
  fi
fi
exit $rc
