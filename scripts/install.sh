#!/usr/bin/env bash
# Install the built cni-ipam binary into a CNI bin directory (idempotent), or remove it.
#
#   scripts/install.sh                       # dist/cni-ipam/ -> /opt/cni/cni-ipam.d/, link /opt/cni/bin/cni-ipam
#   scripts/install.sh --bin-dir DIR         # another CNI bin directory (e.g. /usr/lib/cni)
#   scripts/install.sh --lib-dir DIR         # where the onedir bundle goes (default: DIR/../cni-ipam.d)
#   scripts/install.sh --from PATH           # a built bundle directory or a onefile executable
#   scripts/install.sh --uninstall [--bin-dir DIR] [--lib-dir DIR]
#
# The fast build is a directory (PyInstaller onedir).  It is copied beside the bin directory and the
# bin directory gets a symlink named cni-ipam, which is what a runtime executes for "type": "cni-ipam".
# An upgrade copies the new bundle next to the old one and swaps it in with renames, so a plugin call
# running meanwhile finishes with the files it started with.  A onefile build is copied into the bin
# directory as a regular file.  Reservations under /var/lib/cni/networks are never touched.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN_DIR=/opt/cni/bin
LIB_DIR=
FROM=
UNINSTALL=0
NAME=cni-ipam

while [ $# -gt 0 ]; do
  case "$1" in
    --bin-dir) BIN_DIR=$2; shift ;;
    --lib-dir) LIB_DIR=$2; shift ;;
    --from) FROM=$2; shift ;;
    --uninstall) UNINSTALL=1 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

BIN_DIR=$(realpath -m "$BIN_DIR")
[ -n "$LIB_DIR" ] || LIB_DIR="$(dirname "$BIN_DIR")/$NAME.d"
LIB_DIR=$(realpath -m "$LIB_DIR")
LINK="$BIN_DIR/$NAME"

ours() {  # is $LINK something we installed (a link into LIB_DIR, or a onefile binary)?
  if [ -L "$LINK" ]; then
    [ "$(readlink "$LINK")" = "$LIB_DIR/$NAME" ]
  else
    [ -f "$LINK" ] && CNI_COMMAND=VERSION "$LINK" </dev/null 2>/dev/null | grep -q supportedVersions \
      && grep -aq cni_ipam_entry "$LINK"
  fi
}

if [ "$UNINSTALL" = 1 ]; then
  if [ -e "$LINK" ] || [ -L "$LINK" ]; then
    if ours; then
      rm -f "$LINK"
      echo "removed $LINK"
    else
      echo "install.sh: $LINK is not ours (not a link to $LIB_DIR/$NAME); left alone" >&2
    fi
  fi
  if [ -d "$LIB_DIR" ]; then
    rm -rf "$LIB_DIR"
    echo "removed $LIB_DIR"
  fi
  rm -rf "$LIB_DIR.new" "$LIB_DIR.old"
  echo "cni-ipam uninstalled (reservation data left in place)"
  exit 0
fi

if [ -z "$FROM" ]; then
  if [ -x "$ROOT/dist/$NAME/$NAME" ]; then
    FROM="$ROOT/dist/$NAME"
  elif [ -f "$ROOT/dist/$NAME" ]; then
    FROM="$ROOT/dist/$NAME"
  else
    echo "install.sh: no build found under $ROOT/dist; run scripts/build.sh first (or pass --from)" >&2
    exit 1
  fi
fi
FROM=$(realpath "$FROM")

mkdir -p "$BIN_DIR"
if [ -e "$LINK" ] || [ -L "$LINK" ]; then
  if ! ours; then
    echo "install.sh: $LINK exists and is not a cni-ipam install; remove it first" >&2
    exit 1
  fi
fi

if [ -d "$FROM" ]; then
  [ -x "$FROM/$NAME" ] || { echo "install.sh: $FROM/$NAME is not an executable bundle" >&2; exit 1; }
  # Copy beside, then swap with renames: the old bundle stays whole until the new one is in place.
  rm -rf "$LIB_DIR.new" "$LIB_DIR.old"
  mkdir -p "$(dirname "$LIB_DIR")"
  cp -a "$FROM" "$LIB_DIR.new"
  chmod -R go-w "$LIB_DIR.new"
  if [ -d "$LIB_DIR" ]; then
    mv -T "$LIB_DIR" "$LIB_DIR.old"
  fi
  mv -T "$LIB_DIR.new" "$LIB_DIR"
  rm -rf "$LIB_DIR.old"
  ln -sfn "$LIB_DIR/$NAME" "$LINK.tmp-link"
  mv -Tf "$LINK.tmp-link" "$LINK"
else
  # onefile: one regular file, replaced atomically.
  install -m 0755 "$FROM" "$LINK.tmp-file"
  mv -Tf "$LINK.tmp-file" "$LINK"
fi

if ! out=$(CNI_COMMAND=VERSION "$LINK" </dev/null) || ! grep -q supportedVersions <<<"$out"; then
  echo "install.sh: the installed $LINK does not answer CNI_COMMAND=VERSION" >&2
  exit 1
fi
echo "installed $LINK$([ -L "$LINK" ] && echo " -> $(readlink "$LINK")")"
echo "use \"type\": \"cni-ipam\" in the ipam section of a network config whose runtime searches $BIN_DIR"
