#!/usr/bin/env bash
# Build the binary if there is none (or it is older than the sources), then run the benchmark.
#   scripts/bench.sh --quick        # under two minutes
#   scripts/bench.sh                # the full run (60,000 reservations, 128-ADD storm, GC over 10,000)
# Every option is passed to scripts/bench.py (see --help).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
EXE=dist/cni-ipam/cni-ipam
if [ ! -x "$EXE" ] || [ -n "$(find cni_ipam packaging -newer "$EXE" -type f -print -quit)" ]; then
  bash scripts/build.sh >&2
fi
exec "$PY" scripts/bench.py "$@"
