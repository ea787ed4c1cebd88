#!/usr/bin/env bash
# Install everything the tests and the demo need on a fresh Debian machine. Safe to run twice.
#
# apt: the packages below (root). Python: a project virtual environment in .venv/ (scripts/venv.sh)
# with this package installed editable and its "test" extra; the machine's own Python is left alone.
# Then every scripts/setup.d/*.sh (the libcni driver build, and whatever other features add there).
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(containernetworking-plugins iproute2 iputils-ping golang-go golang-github-appc-cni-dev)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: need root to apt-get install ${missing[*]}" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  flock /tmp/apt.lock apt-get update -qq
  flock /tmp/apt.lock apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# shellcheck source=scripts/venv.sh
. scripts/venv.sh
ensure_venv test

# Extra steps (the libcni driver build, ...) live beside this script; they may use $VENV_PY.
export VENV_PY
for step in scripts/setup.d/*.sh; do
  [ -e "$step" ] && bash "$step"
done
echo "setup: test environment ready (.venv: $VENV_PY)"
