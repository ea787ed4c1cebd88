#!/usr/bin/env bash
# Install everything the tests and the demo need on a fresh Debian machine. Safe to run twice.
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
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
if ! "$PY" -m pip --version >/dev/null 2>&1; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-pip >/dev/null
fi
# The package itself (editable) and the test dependencies from pyproject's "test" extra.
# Debian's own python3 marks itself externally managed; this is a test machine, install anyway.
PIP_BREAK_SYSTEM_PACKAGES=1 "$PY" -m pip install -q --disable-pip-version-check -e ".[test]"

# Extra steps (the libcni driver build) live beside this script.
for step in scripts/setup.d/*.sh; do
  [ -e "$step" ] && bash "$step"
done
echo "setup: test environment ready"
