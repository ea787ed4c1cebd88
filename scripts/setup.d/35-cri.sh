#!/usr/bin/env bash
# The CRI tests (tests/runtime/test_cri*.py): Debian's containerd 1.6 with its CRI plugin and runc,
# gcc with the static C library for the sandbox ("pause") binary, util-linux (unshare/nsenter).
# Their Python side (grpcio, grpcio-tools, hpack) is in the "test" extra of pyproject.toml.
set -euo pipefail
# shellcheck source=scripts/apt.sh
. "$(dirname "$0")/../apt.sh"
ensure_apt containerd runc gcc libc6-dev util-linux iproute2 containernetworking-plugins
