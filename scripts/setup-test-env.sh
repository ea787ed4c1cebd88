#!/usr/bin/env bash
# Install everything the tests and the demo need on a fresh Debian machine. Safe to run twice.
#
# apt: the packages below (root). Python: a project virtual environment in .venv/ (scripts/venv.sh)
# with this package installed editable and its "test" extra; the machine's own Python is left alone.
# Then every scripts/setup.d/*.sh (the libcni driver build, and whatever other features add there).
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/apt.sh
. scripts/apt.sh
ensure_apt containernetworking-plugins iproute2 iputils-ping golang-go golang-github-appc-cni-dev

# shellcheck source=scripts/venv.sh
. scripts/venv.sh
ensure_venv test

# Coverage in the processes the tests start (CNI_IPAM_COVERAGE=1 scripts/test.sh): a .pth in the venv
# (never in the checkout) that starts coverage in an interpreter whose environment names
# COVERAGE_PROCESS_START.  Recent coverage releases install such a .pth themselves.
SITE=$("$VENV_PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
if ! grep -qs "process_startup" "$SITE"/*.pth; then
  echo 'import os; os.environ.get("COVERAGE_PROCESS_START") and __import__("coverage").process_startup()' \
    >"$SITE/cni-ipam-coverage.pth"
fi

# Extra steps (the libcni driver build, ...) live beside this script; they may use $VENV_PY.
export VENV_PY
for step in scripts/setup.d/*.sh; do
  [ -e "$step" ] && bash "$step"
done
echo "setup: test environment ready (.venv: $VENV_PY)"
