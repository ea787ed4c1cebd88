#!/usr/bin/env bash
# Real container runtimes for tests/runtime/ (podman, containerd) and the node image build:
# Debian's podman 4.3 + runc + conmon, containerd 1.6, a static busybox for root filesystems,
# util-linux (unshare/nsenter).  Idempotent: apt-get runs only when something is missing.
set -euo pipefail
# shellcheck source=scripts/apt.sh
. "$(dirname "$0")/../apt.sh"
ensure_apt podman runc conmon containerd busybox-static util-linux iproute2 containernetworking-plugins
