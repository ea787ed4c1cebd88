#!/usr/bin/env bash
# Prepare the build of the shipped executable (scripts/build.sh --prepare), for amd64 and arm64: the
# apt packages it needs (gcc, musl-tools, the arm64 cross compiler, qemu-user-static, ...), Debian's
# source packages, the static runtimes (CPython + OpenSSL + libffi + zlib against musl; kept in
# /var/cache/cni-ipam-build, built only when missing: about 10-25 minutes each from an empty cache on
# 2 cores, seconds when warm) and the build venv build/embed-venv, so a test run that builds the
# executable into a temp dir writes nothing into the checkout.  Also shellcheck, for the scripts.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=scripts/apt.sh
. scripts/apt.sh
[ "$(id -u)" = 0 ] && ensure_apt shellcheck
t0=$(date +%s)
bash scripts/build.sh --prepare
bash scripts/build.sh --prepare --arch arm64
echo "setup: the executable's build is ready ($(( $(date +%s) - t0 )) s)"
