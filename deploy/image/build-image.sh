#!/usr/bin/env bash
# Build the cni-ipam node image offline with podman: FROM scratch + a root filesystem assembled here.
#
#   deploy/image/build-image.sh                        # tags localhost/cni-ipam:<version>
#   deploy/image/build-image.sh --tag registry.example/cni-ipam:0.1.0
#   deploy/image/build-image.sh --exe dist/cni-ipam    # use an existing build (scripts/build.sh)
#   deploy/image/build-image.sh --rootfs-only DIR      # assemble the root filesystem, build no image
#   PODMAN="podman --root R --runroot RR" deploy/image/build-image.sh   # a private image store
#
# The root filesystem holds exactly:
#   /opt/cni-ipam/cni-ipam       the plugin: one static executable (scripts/build.sh), what install copies
#   /opt/cni-ipam/install.sh     scripts/install.sh, unchanged (atomic install, refuses a foreign cni-ipam)
#   /usr/local/bin/cni-ipam-node the entry point (deploy/image/cni-ipam-node): install | reclaim | gc | ...
#   /usr/bin/ctr                 containerd's client, for `cni-ipam gc --runtime containerd:SOCK`
#   bash, the GNU coreutils/grep/find and util-linux flock the scripts use, a static busybox for anything else
#   the shared libraries all of those need (found with ldd), and nothing else.
# No base image is pulled; `podman build` only COPYs (no RUN step needs a container runtime).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
VERSION=$(sed -n 's/^__version__ = "\(.*\)"/\1/p' "$ROOT/cni_ipam/__init__.py")
TAG="localhost/cni-ipam:$VERSION"
EXE=
ROOTFS_ONLY=
PODMAN=${PODMAN:-podman}

while [ $# -gt 0 ]; do
  case "$1" in
    --tag) TAG=$2; shift ;;
    --exe) EXE=$2; shift ;;
    --rootfs-only) ROOTFS_ONLY=$2; shift ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "build-image.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

WORK=$(mktemp -d /tmp/cni-ipam-image.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

if [ -z "$EXE" ]; then
  EXE=$(bash "$ROOT/scripts/build.sh" --dist "$WORK/dist" | tail -n 1)
fi
if [ ! -f "$EXE" ] || [ ! -x "$EXE" ]; then echo "build-image.sh: $EXE is not an executable file (scripts/build.sh prints one)" >&2; exit 1; fi

if [ -n "$ROOTFS_ONLY" ]; then
  RFS=$(realpath -m "$ROOTFS_ONLY")
  [ ! -e "$RFS" ] || [ -z "$(ls -A "$RFS")" ] || { echo "build-image.sh: $RFS is not empty" >&2; exit 1; }
else
  RFS="$WORK/rootfs"
fi
mkdir -p "$RFS"/{bin,usr/bin,usr/local/bin,opt/cni-ipam,etc,tmp,run,proc,sys,dev,var/lib}
ln -s ../run "$RFS/var/run"          # /var/run/netns/... paths recorded at ADD resolve as on the host
chmod 1777 "$RFS/tmp"
install -m 0755 "$EXE" "$RFS/opt/cni-ipam/cni-ipam"
install -m 0755 "$ROOT/scripts/install.sh" "$RFS/opt/cni-ipam/install.sh"
install -m 0755 "$ROOT/deploy/image/cni-ipam-node" "$RFS/usr/local/bin/cni-ipam-node"
echo "root:x:0:0:root:/:/bin/sh" >"$RFS/etc/passwd"
echo "root:x:0:" >"$RFS/etc/group"

# Tools from the build host, each with the libraries ldd says it needs.
# install.sh needs find, chown and flock (its install lock, util-linux) besides the coreutils.
TOOLS=(bash cat chmod chown cmp cp date dirname basename env find flock grep head id install ln ls mkdir mktemp mv
       readlink realpath rm rmdir sed sleep sort stat tail touch tr base64 sha256sum)
for t in "${TOOLS[@]}"; do
  src=$(command -v "$t") || { echo "build-image.sh: $t not found on the build host" >&2; exit 1; }
  cp -L "$src" "$RFS/usr/bin/$t"
done
if command -v ctr >/dev/null; then cp -L "$(command -v ctr)" "$RFS/usr/bin/ctr"; fi
cp -L /bin/busybox "$RFS/bin/busybox"   # static (busybox-static): the fallback shell and utilities
for a in sh ps kill; do ln -s busybox "$RFS/bin/$a"; done
ln -s ../usr/bin/bash "$RFS/bin/bash"

copy_libs() {  # every shared library an ELF file under $RFS needs, at the same path in $RFS
  local f lib
  find "$RFS" -type f \( -perm -u+x -o -name '*.so*' \) -print0 | while IFS= read -r -d '' f; do
    head -c 4 "$f" | grep -q $'\x7fELF' || continue
    { ldd "$f" 2>/dev/null || true; } | while read -r line; do  # static files: "not a dynamic executable"
      case "$line" in
        *"not found"*) echo "build-image.sh: $f needs ${line%% *}, which is nowhere" >&2; exit 1 ;;
        *"=> /"*) lib=${line#*=> }; echo "${lib%% (*}" ;;
        /*) echo "${line%% (*}" ;;
      esac
    done
  done | sort -u | while read -r lib; do
    case "$lib" in "$RFS"/*) continue ;; esac
    [ -e "$RFS$lib" ] || { mkdir -p "$RFS$(dirname "$lib")"; cp -L "$lib" "$RFS$lib"; }
  done
}
copy_libs
# Debian's merged /usr: /lib64 and /lib are links on the host; the loader path must exist as recorded.
[ -e "$RFS/lib64/ld-linux-x86-64.so.2" ] || [ "$(uname -m)" != x86_64 ] || {
  mkdir -p "$RFS/lib64"; cp -L /lib64/ld-linux-x86-64.so.2 "$RFS/lib64/"; }

# The image answers before it is shipped: the plugin runs inside the assembled root.
# VERSION may be answered by the launcher alone; `version` starts its Python too.
if ! CNI_COMMAND=VERSION chroot "$RFS" /opt/cni-ipam/cni-ipam </dev/null | grep -q supportedVersions \
    || ! chroot "$RFS" /opt/cni-ipam/cni-ipam version </dev/null | grep -q '^cni-ipam '; then
  echo "build-image.sh: the plugin does not run inside the assembled root filesystem" >&2; exit 1
fi
if [ -n "$ROOTFS_ONLY" ]; then
  echo "$RFS"
  exit 0
fi

cat >"$WORK/Containerfile" <<CONTAINERFILE
FROM scratch
COPY rootfs/ /
ENV PATH=/usr/local/bin:/usr/bin:/bin
LABEL org.opencontainers.image.title="cni-ipam" org.opencontainers.image.version="$VERSION"
ENTRYPOINT ["/usr/local/bin/cni-ipam-node"]
CMD ["install"]
CONTAINERFILE
$PODMAN build --quiet --network none --pull=never -f "$WORK/Containerfile" -t "$TAG" "$WORK" >/dev/null
echo "$TAG"
