#!/usr/bin/env bash
# Real container runtimes for tests/runtime/ (podman, containerd) and the node image build:
# Debian's podman 4.3 + runc + conmon, containerd 1.6, a static busybox for root filesystems,
# util-linux (unshare/nsenter).  Idempotent: apt-get runs only when something is missing.
set -euo pipefail
PACKAGES=(podman runc conmon containerd busybox-static util-linux iproute2 containernetworking-plugins)
missing=()
for p in "${PACKAGES[@]}"; do
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
  echo "setup: installed ${missing[*]}"
fi
