#!/usr/bin/env bash
# etcd for the cluster-pool tests: Debian's etcd-server (the fixtures start /usr/bin/etcd themselves on
# free loopback ports) and etcd-client (etcdctl, for the operator examples in docs/cluster-ops.md).
# Safe to run twice.  When this step installs etcd-server, the etcd service Debian enables and starts
# on install (a member on 127.0.0.1:2379 with its data in /var/lib/etcd) is disabled and stopped
# again: no test needs it.  Nothing is changed when the package was already installed.
set -euo pipefail

# shellcheck source=scripts/apt.sh
. "$(dirname "$0")/../apt.sh"
# shellcheck source=scripts/setup.d/services.bash
. "$(dirname "$0")/services.bash"
fresh=$(not_installed etcd-server)
ensure_apt etcd-server etcd-client
[ -z "$fresh" ] || quiet_service etcd.service
echo "setup: $(/usr/bin/etcd --version | head -1)"
