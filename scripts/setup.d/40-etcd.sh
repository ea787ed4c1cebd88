#!/usr/bin/env bash
# etcd for the cluster-pool tests: Debian's etcd-server (the fixtures start /usr/bin/etcd themselves on
# free loopback ports, so a packaged etcd service on 2379 does not matter) and etcd-client (etcdctl, for
# the operator examples in docs/cluster-ops.md).  Safe to run twice.
set -euo pipefail

# shellcheck source=scripts/apt.sh
. "$(dirname "$0")/../apt.sh"
ensure_apt etcd-server etcd-client
echo "setup: $(/usr/bin/etcd --version | head -1)"
