#!/usr/bin/env bash
# Build the executable (scripts/build.sh) if there is none or it is older than the sources, then run
# the benchmark.  BUILD_ARGS is passed to scripts/build.sh.
#   scripts/bench.sh --quick        # under two minutes
#   scripts/bench.sh                # the full run (60,000 reservations, storms of 16/64/110, GC over 10,000; ~10 min)
# Every option is passed to scripts/bench.py (see --help).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${PYTHON:-}" ]; then
  PY=$PYTHON
else  # the project virtual environment, never the machine's Python (scripts/venv.sh)
  # shellcheck source=scripts/venv.sh
  . scripts/venv.sh
  ensure_venv base
  PY=$VENV_PY
fi
EXE=dist/cni-ipam
if [ ! -x "$EXE" ] || [ -n "$(find cni_ipam packaging -newer "$EXE" -type f -print -quit)" ]; then
  # shellcheck disable=SC2086
  bash scripts/build.sh ${BUILD_ARGS:-} >&2
fi
exec "$PY" scripts/bench.py "$@"
