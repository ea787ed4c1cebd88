#!/usr/bin/env bash
# Build the shipped cni-ipam executable: one static file, prints its path.
#
#   scripts/build.sh                  # dist/cni-ipam, for this machine's architecture (amd64)
#   scripts/build.sh --arch arm64     # dist/arm64/cni-ipam (cross-built; checked with qemu-aarch64-static)
#   scripts/build.sh --dist DIR       # output directory (default dist/)
#   scripts/build.sh --no-freeze      # plugin-path modules left in the archive, not frozen (measuring)
#   scripts/build.sh --prepare        # install and build what the build needs (apt, sources, runtime, venv), no executable
#   scripts/build.sh --venv DIR       # the build virtual environment (default build/embed-venv)
#   scripts/build.sh --cache DIR      # where the static runtime and its sources are kept
#                                     # (default /var/cache/cni-ipam-build, $CNI_IPAM_BUILD_CACHE)
#
# The executable is packaging/launcher.c linked statically (musl) with a static CPython 3.11 whose
# extension modules are compiled in (OpenSSL, libffi, zlib included), followed by a zip of the
# stdlib, cni_ipam and the third-party packages as .pyc (packaging/build_bundle.py).  It needs nothing
# on the node: no libc, no loader, no Python.  The runtime (packaging/build_runtime.sh, from Debian's
# source packages python3.11, openssl, libffi, zlib and musl, fetched with apt-get source through a
# private source list in the cache) takes 15-20 minutes on 2 cores; it is kept in the cache under a hash
# of every input and rebuilt only when one changes.  The executable itself then takes about 10 s.
# Build needs (installed with apt-get when missing and root): gcc, make, dpkg-dev, musl-tools,
# python3.11, python3.11-venv; for arm64 also gcc-aarch64-linux-gnu, linux-libc-dev-arm64-cross,
# qemu-user-static.  The third-party packages (pyproject.toml's dependencies, all pure Python) go
# into the build venv, made from /usr/bin/python3.11, never into the machine's Python.
# Then: scripts/install.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
DIST="$ROOT/dist"
BVENV="$ROOT/build/embed-venv"
CACHE=${CNI_IPAM_BUILD_CACHE:-/var/cache/cni-ipam-build}
ARCH=amd64
FREEZE=()
PREPARE=0
SUITE=bookworm
# The Debian mirror this machine's apt already uses (its first non-security source), unless set.
debian_mirror() {
  { grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources || true
    grep -hs '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list || true
  } | awk '$2 !~ /security/ {print $2; exit}'
}
MIRROR=${CNI_IPAM_DEBIAN_MIRROR:-$(debian_mirror)}

usage() { echo "build.sh: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --arch) ARCH=${2:-}; [ "$ARCH" = amd64 ] || [ "$ARCH" = arm64 ] || usage "--arch takes amd64 or arm64"; shift ;;
    --no-freeze) FREEZE=(--no-freeze) ;;
    --prepare) PREPARE=1 ;;
    --venv) [ -n "${2:-}" ] || usage "--venv needs a directory"; BVENV=$(realpath -m "$2"); shift ;;
    --dist) [ -n "${2:-}" ] || usage "--dist needs a directory"; DIST=$(realpath -m "$2"); shift ;;
    --cache) [ -n "${2:-}" ] || usage "--cache needs a directory"; CACHE=$(realpath -m "$2"); shift ;;
    -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
    *) usage "unknown option $1 (see --help)" ;;
  esac
  shift
done
[ "$(uname -m)" = x86_64 ] || { echo "build.sh: builds on amd64 (x86_64) only" >&2; exit 1; }
if ! mkdir -p "$CACHE" 2>/dev/null || [ ! -w "$CACHE" ]; then
  CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/cni-ipam-build
  mkdir -p "$CACHE"
fi
EMBED=/usr/bin/python3.11
EMULATOR=
OUTDIR=$DIST

# shellcheck source=scripts/apt.sh
. scripts/apt.sh
need=(gcc make dpkg-dev musl-tools python3.11 python3.11-venv)
if [ "$ARCH" = arm64 ]; then
  need+=(gcc-aarch64-linux-gnu linux-libc-dev-arm64-cross qemu-user-static)
  EMULATOR=qemu-aarch64-static
  OUTDIR=$DIST/arm64
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then ensure_apt "${need[@]}"; fi
for t in gcc make dpkg-source musl-gcc "$EMBED" ${EMULATOR:+"$EMULATOR"}; do
  command -v "$t" >/dev/null || { echo "build.sh: $t missing (Debian: apt-get install ${need[*]})" >&2; exit 1; }
done

# ------------------------------------------------------------------ the sources (Debian source packages)
exec 8>"$CACHE/.lock"
flock 8   # one build at a time per cache: the runtime is made once
SRC=$CACHE/src
mkdir -p "$SRC"
apt_private() {  # apt_private LISTNAME ARCH APT-ARGS...: apt-get with a source list of its own in the cache
  local name=$1 arch=$2
  shift 2
  mkdir -p "$CACHE/apt/$name/lists/partial" "$CACHE/apt/$name/archives/partial"
  apt-get -q -o Dir::Etc::SourceList="$CACHE/apt/$name/sources.list" -o Dir::Etc::SourceParts=/nonexistent \
    -o Dir::State::Lists="$CACHE/apt/$name/lists" -o Dir::State::status=/dev/null \
    -o Dir::Cache="$CACHE/apt/$name" -o APT::Architecture="$arch" -o APT::Architectures::="$arch" \
    -o APT::Sandbox::User=root "$@"
}
missing=()
for p in python3.11 openssl libffi zlib musl; do
  compgen -G "$SRC/${p}_*.dsc" >/dev/null || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ] && [ -z "$MIRROR" ]; then
  echo "build: no Debian mirror in this machine's apt sources; set CNI_IPAM_DEBIAN_MIRROR" >&2
  exit 1
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "build: fetching the source packages ${missing[*]} ($SUITE)" >&2
  mkdir -p "$CACHE/apt/src"
  echo "deb-src $MIRROR $SUITE main" >"$CACHE/apt/src/sources.list"
  apt_private src amd64 update -qq
  (cd "$SRC" && apt_private src amd64 source --download-only "${missing[@]}" >/dev/null)
fi
if [ "$ARCH" = arm64 ] && [ ! -f "$SRC/musl-arm64/usr/lib/aarch64-linux-musl/musl-gcc.specs" ]; then
  echo "build: fetching musl for arm64" >&2
  mkdir -p "$CACHE/apt/arm64"
  echo "deb [arch=arm64] $MIRROR $SUITE main" >"$CACHE/apt/arm64/sources.list"
  apt_private arm64 arm64 update -qq
  (cd "$SRC" && rm -f musl*_arm64.deb && apt_private arm64 arm64 download musl:arm64 musl-dev:arm64 musl-tools:arm64 >/dev/null)
  rm -rf "$SRC/musl-arm64"
  for d in "$SRC"/musl*_arm64.deb; do dpkg-deb -x "$d" "$SRC/musl-arm64"; done
fi

# ------------------------------------------------------------------ the static runtime (cached)
# shellcheck disable=SC2010  # file names of our own cache (no odd characters), hashed as ls prints them
KEY=$( { echo "$ARCH"; cat packaging/build_runtime.sh; sha256sum "$SRC"/python3.11_*.dsc "$SRC"/openssl_*.dsc \
         "$SRC"/libffi_*.dsc "$SRC"/zlib_*.dsc "$SRC"/musl_*.dsc | cut -d' ' -f1; gcc --version | head -n1;
         dpkg-query -W -f='${Version}' musl-dev 2>/dev/null; ls "$SRC" | grep '_arm64.deb$' || true; } \
       | sha256sum | cut -c1-16)
RUNTIME=$CACHE/runtime/$ARCH-$KEY
if [ ! -f "$RUNTIME/.complete" ]; then
  echo "build: building the static runtime for $ARCH into $RUNTIME (once per set of inputs; about 10 min)" >&2
  t0=$(date +%s)
  mkdir -p "$CACHE/runtime"
  # Built in place (the compiler wrapper names its directory); .complete marks a finished one.
  bash packaging/build_runtime.sh --arch "$ARCH" --src "$SRC" --out "$RUNTIME"
  echo "$(( $(date +%s) - t0 ))" >"$RUNTIME/.complete"
  # Runtimes of other inputs: keep the newest two per architecture.
  # shellcheck disable=SC2012  # our own directory names (ARCH-hex); ls -t gives the age order
  ls -dt "$CACHE/runtime/$ARCH"-* 2>/dev/null | tail -n +3 | while IFS= read -r old; do rm -rf -- "$old"; done
fi
exec 8>&-

# ------------------------------------------------------------------ the build venv (third-party packages)
want="$("$EMBED" -c 'import sys; print(sys.version)' | head -n1) $(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ "$(cat "$BVENV/.cni-ipam-bundle" 2>/dev/null)" != "$want" ]; then
  echo "build: preparing the build venv $BVENV from $EMBED" >&2
  rm -rf -- "$BVENV"
  "$EMBED" -m venv "$BVENV"
  mapfile -t deps < <("$EMBED" -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))')
  { "$BVENV/bin/python" -m pip install -q --disable-pip-version-check "${deps[@]}" 2>&1 1>&3 3>&- \
      | { grep -v "^WARNING: Location '" || true; } >&2; } 3>&1
  echo "$want" >"$BVENV/.cni-ipam-bundle"
fi
[ "$PREPARE" = 1 ] && { echo "build: ready ($RUNTIME, $BVENV)" >&2; exit 0; }

# ------------------------------------------------------------------ the executable
smoke_test() {  # the VERSION verb must answer, and the Python side must start (`cni-ipam version`)
  if ! CNI_COMMAND=VERSION ${EMULATOR:+"$EMULATOR"} "$1" </dev/null | grep -q supportedVersions \
     || ! ${EMULATOR:+"$EMULATOR"} "$1" version </dev/null | grep -q '^cni-ipam '; then
    echo "build: $1 does not answer CNI_COMMAND=VERSION and 'version'" >&2
    exit 1
  fi
}
mkdir -p "$OUTDIR"
STAGE="$OUTDIR/.cni-ipam.tmp-$$"
trap 'rm -f -- "$STAGE"' EXIT
"$BVENV/bin/python" packaging/build_bundle.py --out "$STAGE" --root "$ROOT" --runtime "$RUNTIME" \
  --emulator "$EMULATOR" ${FREEZE[@]+"${FREEZE[@]}"}
smoke_test "$STAGE"
mv -f -- "$STAGE" "$OUTDIR/cni-ipam"
trap - EXIT
echo "build: $(du -h "$OUTDIR/cni-ipam" | cut -f1) in $OUTDIR/cni-ipam ($ARCH, static)" >&2
echo "$OUTDIR/cni-ipam"
