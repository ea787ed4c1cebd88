#!/usr/bin/env bash
# The Debian 11 root the portability tests (tests/portable/test_roots.py) run the executable in:
# `debootstrap --variant=minbase bullseye`, kept as a tarball outside the checkout
# ($CNI_IPAM_ROOTS_CACHE, default /var/cache/cni-ipam-build/roots); made only when missing (a few
# minutes, from the Debian mirror).  The busybox-only root needs busybox-static.  Root only.
set -euo pipefail
cd "$(dirname "$0")/../.."
[ "$(id -u)" = 0 ] || { echo "setup: not root: the portability roots are not prepared (their tests skip)"; exit 0; }
# shellcheck source=scripts/apt.sh
. scripts/apt.sh
ensure_apt debootstrap busybox-static
t0=$(date +%s)
PYTHONPATH=. python3 -c 'from tests.portable.roots import bullseye_tarball; print("setup: Debian 11 root:", bullseye_tarball())'
echo "setup: portability roots ready ($(( $(date +%s) - t0 )) s)"
