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

# Extra steps (the libcni driver build, ...) live beside this script; they may use $VENV_PY.
export VENV_PY
for step in scripts/setup.d/*.sh; do
  [ -e "$step" ] && bash "$step"
done
echo "setup: test environment ready (.venv: $VENV_PY)"
