#!/usr/bin/env bash
# The main job, for real: a network namespace attached with bridge + cni-ipam through libcni
# (the cnitool-style driver in tests/libcni-driver), ADD -> CHECK -> DEL, printing the result JSON
# and the reservation files, then cleaning up.  Run as root on Debian 12; installs what it needs
# (apt: containernetworking-plugins iproute2 iputils-ping golang-go golang-github-appc-cni-dev;
# the project virtual environment .venv/ with this package and its dependencies, pyroute2 for CHECK
# inside the namespace: scripts/venv.sh, the machine's Python is left alone) and is safe to run
# again, also while another run is going on.
#
# Every run has its own names (namespaces rt-demo-<id> and rt-demo-<id>-host, bridge rtd<id>,
# container demo-<id>) and a /24 under 10.251.0.0/16 that no address or route of the machine
# touches; it deletes only what it made.  The bridge lives in its own namespace, so the demo never
# touches the machine's own network.  CNI_IPAM_EXE=/path/to/cni-ipam runs a built binary instead of
# .venv/bin/python -m cni_ipam.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

RUN_ID=$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')   # 6 hex digits, this run's names
HOST_NS=rt-demo-$RUN_ID-host
CTR_NS=rt-demo-$RUN_ID
BRIDGE=rtd$RUN_ID
NET=demonet
DRIVER="$ROOT/tests/libcni-driver/cnidriver"

if [ -t 1 ]; then say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }; else say() { printf '\n==> %s\n' "$*"; }; fi
die() { echo "demo: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (sudo $0): it creates network namespaces"

# ------------------------------------------------------------------ what the demo needs
# shellcheck source=scripts/apt.sh
. scripts/apt.sh
ensure_apt containernetworking-plugins iproute2 iputils-ping golang-go golang-github-appc-cni-dev
# shellcheck source=scripts/venv.sh
. scripts/venv.sh
ensure_venv base       # .venv/ with cni-ipam and its dependencies (pyroute2: CHECK reads the namespace)
PY=$VENV_PY
bash scripts/setup.d/20-libcni-driver.sh

# ------------------------------------------------------------------ a scratch world, this run's own
MADE_NS=()
cleanup() {
  local ns
  for ns in "${MADE_NS[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
  if [ -n "${WORK:-}" ]; then rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
# A /24 under 10.251.0.0/16 that no address or route of this machine overlaps (the bridge lives in
# its own namespace anyway, but a demo subnet that shadows a real one would only confuse).
SUBNET=$("$PY" - "$RUN_ID" <<'PYEOF'
import ipaddress, json, random, subprocess, sys
used = []
for args in (["-4", "-j", "route", "show", "table", "all"], ["-4", "-j", "addr"]):
    out = subprocess.run(["ip", *args], capture_output=True, text=True).stdout or "[]"
    for item in json.loads(out):
        if "dst" in item and item["dst"] not in ("default", ""):
            used.append(ipaddress.ip_network(item["dst"] if "/" in item["dst"] else item["dst"] + "/32", strict=False))
        for a in item.get("addr_info", []):
            used.append(ipaddress.ip_network(f"{a['local']}/{a['prefixlen']}", strict=False))
rng = random.Random(sys.argv[1])
for third in rng.sample(range(256), 256):
    net = ipaddress.ip_network(f"10.251.{third}.0/24")
    if not any(net.overlaps(u) for u in used if u.prefixlen > 0):
        print(net)
        break
else:
    sys.exit("no free /24 under 10.251.0.0/16")
PYEOF
) || die "could not choose a subnet"
PREFIX3=${SUBNET%.0/24}
WORK=$(mktemp -d /tmp/rt-demo.XXXXXX)
mkdir -p "$WORK/net" "$WORK/bin" "$WORK/cache" "$WORK/data"

if [ -n "${CNI_IPAM_EXE:-}" ]; then
  printf '#!/bin/sh\nexec %s "$@"\n' "$CNI_IPAM_EXE" >"$WORK/bin/cni-ipam"
else
  # the venv's interpreter as it is (resolving its link would leave the venv and its pyroute2)
  cat >"$WORK/bin/cni-ipam" <<EOF
#!/bin/sh
PYTHONPATH="$ROOT"\${PYTHONPATH:+:\$PYTHONPATH}
export PYTHONPATH
exec "$PY" -m cni_ipam "\$@"
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
      "bridge": "$BRIDGE",
      "isGateway": true,
      "ipam": {
        "type": "cni-ipam",
        "dataDir": "$WORK/data",
        "ranges": [[{"subnet": "$SUBNET", "rangeStart": "$PREFIX3.10", "exclude": ["$PREFIX3.10/31"]}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    }
  ]
}
EOF

export NETCONFPATH="$WORK/net" CNI_PATH="$WORK/bin:/usr/lib/cni" CNI_CACHE_DIR="$WORK/cache"
export CNI_CONTAINERID=demo-$RUN_ID CNI_IFNAME=eth0
unset CNI_ARGS CAP_ARGS
for ns in "$HOST_NS" "$CTR_NS"; do
  ip netns add "$ns"
  MADE_NS+=("$ns")
done
ip -n "$HOST_NS" link set lo up
ip -n "$CTR_NS" link set lo up
drive() { ip netns exec "$HOST_NS" "$DRIVER" "$@"; }
NS_PATH=/var/run/netns/$CTR_NS

say "network config ($NETCONFPATH/10-$NET.conflist)"
cat "$NETCONFPATH/10-$NET.conflist"

say "ADD: cnidriver add $NET $NS_PATH   (libcni -> bridge -> cni-ipam)"
drive add "$NET" "$NS_PATH" || die "ADD failed"

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
GW=$(ip -n "$HOST_NS" -4 -o addr show dev "$BRIDGE" | awk '{print $4}' | cut -d/ -f1)
ip netns exec "$CTR_NS" ping -n -q -c 1 -W 2 "$GW" >/dev/null || die "the container cannot reach its gateway $GW"
echo "ping gateway $GW: ok"

say "CHECK: cnidriver check $NET $NS_PATH"
drive check "$NET" "$NS_PATH" || die "CHECK failed"
echo "CHECK ok: reservation, prevResult and the address on eth0 in $NS_PATH agree"

say "CHECK again after removing the address inside the namespace (must fail)"
CIDR=$(ip -n "$CTR_NS" -4 -o addr show dev eth0 | awk '{print $4}')
ip -n "$CTR_NS" addr del "$CIDR" dev eth0
if drive check "$NET" "$NS_PATH" 2>/dev/null; then die "CHECK passed although $CIDR is gone from eth0"; fi
ip -n "$CTR_NS" addr add "$CIDR" dev eth0
ip -n "$CTR_NS" route replace default via "$GW" dev eth0
drive check "$NET" "$NS_PATH" || die "CHECK failed after the address was put back"
echo "address put back: CHECK ok again"

say "STATUS: cnidriver status $NET"
drive status "$NET" || die "STATUS failed"
echo "STATUS ok: an ADD could succeed now"

say "DEL: cnidriver del $NET $NS_PATH"
drive del "$NET" "$NS_PATH" || die "DEL failed"
echo "DEL ok"
left=$(find "$WORK/data/$NET" -maxdepth 1 -type f ! -name lock ! -name 'last_reserved_ip.*' | wc -l)
[ "$left" -eq 0 ] || die "$left reservation file(s) left after DEL"
echo "reservation files left: 0"
drive del "$NET" "$NS_PATH" || die "the second DEL failed (DEL must be idempotent)"
echo "second DEL ok (idempotent)"

say "demo passed; cleaning up"
