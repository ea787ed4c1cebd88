#!/usr/bin/env bash
# The static checks, the same locally and in CI (.ci/run):
#   ruff     cni_ipam/ scripts/ tests/   (rules and line length: [tool.ruff] in pyproject.toml)
#   mypy     cni_ipam                    ([tool.mypy]: default strictness, Python 3.11)
#   the import graph                     (scripts/import_graph.py: layers point down, no cycle)
#   the shell scripts                    (shellcheck on scripts/, scripts/setup.d/, deploy/)
# Uses the project venv (.venv/, made by scripts/setup-test-env.sh); writes nothing into the checkout.
# Runs every check and exits 1 when any of them failed.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
export PYTHONDONTWRITEBYTECODE=1
BIN=.venv/bin
failed=()
step() {  # step NAME CMD...: run one check, remember its failure
  local name=$1
  shift
  echo "== $name"
  if "$@"; then echo "   $name: ok"; else failed+=("$name"); fi
}
if [ ! -x "$BIN/ruff" ] || [ ! -x "$BIN/mypy" ]; then
  echo "check: run scripts/setup-test-env.sh first (.venv with ruff, mypy)" >&2
  exit 2
fi
command -v shellcheck >/dev/null || { echo "check: shellcheck missing (apt-get install shellcheck)" >&2; exit 2; }

step ruff "$BIN/ruff" check --no-cache --output-format concise cni_ipam scripts tests
# mypy's cache goes to a temp dir: nothing written into the checkout
MYPY_CACHE=$(mktemp -d /tmp/cni-ipam-mypy.XXXXXX)
trap 'rm -rf "$MYPY_CACHE"' EXIT
step mypy "$BIN/mypy" --cache-dir "$MYPY_CACHE" cni_ipam
step import-graph "$BIN/python" scripts/import_graph.py
shopt -s nullglob
step shellcheck shellcheck -x scripts/*.sh scripts/setup.d/*.sh scripts/setup.d/*.bash deploy/*.sh

if [ ${#failed[@]} -gt 0 ]; then
  echo "check: FAILED: ${failed[*]}" >&2
  exit 1
fi
echo "check: all static checks passed"
