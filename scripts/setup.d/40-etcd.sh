#!/usr/bin/env bash
# etcd for the cluster-pool tests: Debian's etcd-server (the fixtures start /usr/bin/etcd themselves on
# free loopback ports, so a packaged etcd service on 2379 does not matter) and etcd-client (etcdctl, for
# the operator examples in docs/cluster-ops.md).  Safe to run twice.
set -euo pipefail

missing=()
for p in etcd-server etcd-client; do
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
echo "setup: $(/usr/bin/etcd --version | head -1)"
