#!/usr/bin/env bash
# Real container runtimes for tests/runtime/ (podman, containerd) and the node image build:
# Debian's podman 4.3 + runc + conmon, containerd 1.6, a static busybox for root filesystems,
# util-linux (unshare/nsenter).  Idempotent: apt-get runs only when something is missing.
#
# The tests start their own containerd (private root, state and sockets) and run podman without its
# API socket, so when this step installs them it leaves nothing running: the containerd service and
# podman.socket that Debian enables on install are disabled and stopped again, and the default network
# podman's package puts into /etc/cni/net.d (87-podman-bridge.conflist, which every CNI tool on the
# machine would then list) is moved to /etc/containers/87-podman-bridge.conflist.disabled.  Nothing is
# changed when the packages were already installed.
set -euo pipefail
# shellcheck source=scripts/apt.sh
. "$(dirname "$0")/../apt.sh"
# shellcheck source=scripts/setup.d/services.bash
. "$(dirname "$0")/services.bash"

fresh_podman=$(not_installed podman)
fresh_containerd=$(not_installed containerd)
ensure_apt podman runc conmon containerd busybox-static util-linux iproute2 containernetworking-plugins
if [ -n "$fresh_containerd" ]; then
  quiet_service containerd.service
fi
if [ -n "$fresh_podman" ]; then
  quiet_service podman.socket
  conflist=/etc/cni/net.d/87-podman-bridge.conflist
  if [ -f "$conflist" ]; then
    mv "$conflist" /etc/containers/87-podman-bridge.conflist.disabled
    echo "setup: moved podman's default network out of /etc/cni/net.d (/etc/containers/87-podman-bridge.conflist.disabled)"
  fi
fi
