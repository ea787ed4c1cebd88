#!/usr/bin/env bash
# The main job, for real: a network namespace attached with bridge + cni-ipam through libcni
# (the cnitool-style driver in tests/libcni-driver), ADD -> CHECK -> DEL, printing the result JSON
# and the reservation files, then cleaning up.  Run as root on Debian 12; installs what it needs
# (apt: containernetworking-plugins iproute2 iputils-ping golang-go golang-github-appc-cni-dev;
# pip: pyroute2 for CHECK inside the namespace) and is safe to run again.
#
# The bridge lives in its own namespace (rt-demo-host), so the demo never touches the machine's
# own network.  CNI_IPAM_EXE=/path/to/cni-ipam runs a built binary instead of python3 -m cni_ipam.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

HOST_NS=rt-demo-host
CTR_NS=rt-demo
NET=demonet
DRIVER="$ROOT/tests/libcni-driver/cnidriver"

if [ -t 1 ]; then say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }; else say() { printf '\n==> %s\n' "$*"; }; fi
die() { echo "demo: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (sudo $0): it creates network namespaces"

# ------------------------------------------------------------------ what the demo needs
need=()
for p in containernetworking-plugins iproute2 iputils-ping golang-go golang-github-appc-cni-dev; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  say "installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
PY=${PYTHON:-python3}
command -v "$PY" >/dev/null || die "python3 missing (apt-get install python3)"
if ! "$PY" -c 'import pyroute2' 2>/dev/null; then
  say "installing pyroute2 (CHECK reads the container namespace with it)"
  "$PY" -m pip install -q --disable-pip-version-check pyroute2 2>/dev/null \
    || "$PY" -m pip install -q --disable-pip-version-check --break-system-packages pyroute2 \
    || echo "demo: pyroute2 could not be installed; CHECK will skip the in-namespace part" >&2
fi
bash scripts/setup.d/20-libcni-driver.sh

# ------------------------------------------------------------------ a scratch world
cleanup() {
  ip netns del "$CTR_NS" 2>/dev/null || true
  ip netns del "$HOST_NS" 2>/dev/null || true
  if [ -n "${WORK:-}" ]; then rm -rf "$WORK"; fi
}
cleanup            # leftovers of an interrupted earlier run
trap cleanup EXIT
WORK=$(mktemp -d /tmp/rt-demo.XXXXXX)
mkdir -p "$WORK/net" "$WORK/bin" "$WORK/cache" "$WORK/data"

if [ -n "${CNI_IPAM_EXE:-}" ]; then
  printf '#!/bin/sh\nexec %s "$@"\n' "$CNI_IPAM_EXE" >"$WORK/bin/cni-ipam"
else
  PYEXE=$("$PY" -c 'import os, sys; print(os.path.realpath(sys.executable))')
  cat >"$WORK/bin/cni-ipam" <<EOF
#!/bin/sh
PYTHONPATH="$ROOT"\${PYTHONPATH:+:\$PYTHONPATH}
export PYTHONPATH
exec "$PYEXE" -m cni_ipam "\$@"
EOF
fi
chmod +x "$WORK/bin/cni-ipam"

cat >"$WORK/net/10-$NET.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "$NET",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "rt-demo0",
      "isGateway": true,
      "ipam": {
        "type": "cni-ipam",
        "dataDir": "$WORK/data",
        "ranges": [[{"subnet": "10.251.200.0/24", "rangeStart": "10.251.200.10", "exclude": ["10.251.200.10/31"]}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    }
  ]
}
EOF

export NETCONFPATH="$WORK/net" CNI_PATH="$WORK/bin:/usr/lib/cni" CNI_CACHE_DIR="$WORK/cache"
export CNI_CONTAINERID=demo-container CNI_IFNAME=eth0
unset CNI_ARGS CAP_ARGS
ip netns add "$HOST_NS"
ip netns add "$CTR_NS"
ip -n "$HOST_NS" link set lo up
ip -n "$CTR_NS" link set lo up
drive() { ip netns exec "$HOST_NS" "$DRIVER" "$@"; }
NS_PATH=/var/run/netns/$CTR_NS

say "network config ($NETCONFPATH/10-$NET.conflist)"
cat "$NETCONFPATH/10-$NET.conflist"

say "ADD: cnidriver add $NET $NS_PATH   (libcni -> bridge -> cni-ipam)"
drive add "$NET" "$NS_PATH"

say "reservation files in $WORK/data/$NET (content: containerID \\r\\n ifname)"
found=0
for f in "$WORK/data/$NET"/*; do
  name=$(basename "$f")
  case "$name" in
    lock) continue ;;
    last_reserved_ip.*) echo "$name: $(cat "$f")"; continue ;;
  esac
  found=1
  echo "$name: $("$PY" -c 'import sys; print(repr(open(sys.argv[1], "rb").read().decode()))' "$f")"
done
[ "$found" = 1 ] || die "no reservation file after ADD"

say "inside the container namespace"
ip -n "$CTR_NS" -br addr show dev eth0
ip -n "$CTR_NS" route
GW=$(ip -n "$HOST_NS" -4 -o addr show dev rt-demo0 | awk '{print $4}' | cut -d/ -f1)
ip netns exec "$CTR_NS" ping -n -q -c 1 -W 2 "$GW" >/dev/null && echo "ping gateway $GW: ok" \
  || die "the container cannot reach its gateway $GW"

say "CHECK: cnidriver check $NET $NS_PATH"
drive check "$NET" "$NS_PATH" && echo "CHECK ok: reservation, prevResult and the address on eth0 in $NS_PATH agree"

say "CHECK again after removing the address inside the namespace (must fail)"
CIDR=$(ip -n "$CTR_NS" -4 -o addr show dev eth0 | awk '{print $4}')
ip -n "$CTR_NS" addr del "$CIDR" dev eth0
if drive check "$NET" "$NS_PATH" 2>/dev/null; then die "CHECK passed although $CIDR is gone from eth0"; fi
ip -n "$CTR_NS" addr add "$CIDR" dev eth0
ip -n "$CTR_NS" route replace default via "$GW" dev eth0
drive check "$NET" "$NS_PATH" && echo "address put back: CHECK ok again"

say "STATUS: cnidriver status $NET"
drive status "$NET" && echo "STATUS ok: an ADD could succeed now"

say "DEL: cnidriver del $NET $NS_PATH"
drive del "$NET" "$NS_PATH" && echo "DEL ok"
left=$(find "$WORK/data/$NET" -maxdepth 1 -type f ! -name lock ! -name 'last_reserved_ip.*' | wc -l)
[ "$left" -eq 0 ] || die "$left reservation file(s) left after DEL"
echo "reservation files left: 0"
drive del "$NET" "$NS_PATH" && echo "second DEL ok (idempotent)"

say "demo passed; cleaning up"
