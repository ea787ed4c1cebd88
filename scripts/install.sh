#!/usr/bin/env bash
# Install the built cni-ipam executable into a CNI bin directory (idempotent, atomic upgrades), or remove it.
#
#   scripts/install.sh                       # dist/cni-ipam -> /opt/cni/bin/cni-ipam
#   scripts/install.sh --bin-dir DIR         # another CNI bin directory (e.g. /usr/lib/cni, a host mount)
#   scripts/install.sh --from FILE           # another build of the executable (scripts/build.sh prints it)
#   scripts/install.sh --uninstall [--bin-dir DIR]
#   scripts/install.sh --lib-dir DIR         # where an earlier layout kept its bundles (default
#                                            # BIN_DIR/../cni-ipam.d): removed by an install or uninstall
#
# The executable is one static file (no libc, loader or Python needed on the node): it is copied to
# BIN_DIR/.cni-ipam.tmp-<pid>, made root:root 0755, checked (it must answer CNI_COMMAND=VERSION and
# `cni-ipam version`, which starts its Python), then renamed over BIN_DIR/cni-ipam: a plugin call
# sees the old file or the new one, never none, and a call already running keeps the file it started
# (its inode lives until it exits).  No old version is kept on disk.  Installs and uninstalls of one
# bin directory are serialised (flock on the directory).
#
# Exit 0 = installed (or uninstalled) and the installed plugin answers; 1 = refused or failed, with
# the reason on stderr, nothing half-done left in use; 2 = usage error.  The first line of stdout is
# "installed <path>".  Safety: it refuses to replace a cni-ipam that it did not install, never removes
# anything that is not its own, and never touches reservations under /var/lib/cni/networks.
# --uninstall removes the bin directory when nothing else is left in it, and the parents of it that
# the install had to create (listed in BIN_DIR/.cni-ipam-created-dirs, written only in that case).
set -euo pipefail
BIN_DIR=/opt/cni/bin
LIB_DIR=
FROM=
UNINSTALL=0
NAME=cni-ipam
ROOT=$(cd "$(dirname "$0")/.." && pwd)
MANIFEST=.cni-ipam-install
MANIFEST_HEAD="# cni-ipam install manifest 1: this directory and the entries below belong to scripts/install.sh"
CREATED=.cni-ipam-created-dirs   # in BIN_DIR, only when install.sh made parents of BIN_DIR

die() { echo "install.sh: $*" >&2; exit 1; }
usage() { echo "install.sh: $*" >&2; echo "usage: install.sh [--bin-dir DIR] [--from FILE] [--uninstall] [--lib-dir DIR] (see --help)" >&2; exit 2; }
value() { if [ $# -lt 2 ] || [ -z "$2" ]; then usage "$1 needs a value"; fi; }

while [ $# -gt 0 ]; do
  case "$1" in
    --bin-dir) value "$@"; BIN_DIR=$2; shift ;;
    --lib-dir) value "$@"; LIB_DIR=$2; shift ;;
    --from) value "$@"; FROM=$2; shift ;;
    --uninstall) UNINSTALL=1 ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) usage "unknown option $1" ;;
  esac
  shift
done
umask 022

# Absolute paths without resolving a symlink in the last component: that one is checked, not followed.
BIN_DIR=$(realpath -m -s "$BIN_DIR")
[ -n "$LIB_DIR" ] || LIB_DIR="$(dirname "$BIN_DIR")/$NAME.d"
LIB_DIR=$(realpath -m -s "$LIB_DIR")
TARGET="$BIN_DIR/$NAME"
[ -L "$BIN_DIR" ] && [ ! -d "$BIN_DIR" ] && die "--bin-dir $BIN_DIR is a dangling symlink"
[ -e "$BIN_DIR" ] && [ ! -d "$BIN_DIR" ] && die "--bin-dir $BIN_DIR exists and is not a directory"

answers_version() {  # does "$1" answer CNI_COMMAND=VERSION, and does its Python side start?
  local out
  out=$(env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin CNI_COMMAND=VERSION "$1" </dev/null 2>/dev/null) && grep -q supportedVersions <<<"$out" || return 1
  # The launcher answers VERSION without starting Python; `cni-ipam version` loads the rest.
  out=$(env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin "$1" version </dev/null 2>/dev/null) && grep -q '^cni-ipam ' <<<"$out"
}

# An earlier layout: BIN_DIR/cni-ipam -> LIB_DIR/cni-ipam, LIB_DIR holding the bundle directories.
is_ours_dir() { [ -f "$LIB_DIR/$MANIFEST" ] && [ ! -L "$LIB_DIR/$MANIFEST" ] && head -n1 "$LIB_DIR/$MANIFEST" | grep -qxF "$MANIFEST_HEAD"; }
is_legacy_dir() {  # the layout before the manifest: LIB_DIR was the bundle itself (cni-ipam + _internal)
  [ -d "$LIB_DIR" ] && ! is_ours_dir && [ -f "$LIB_DIR/$NAME" ] && [ ! -L "$LIB_DIR/$NAME" ] && [ -d "$LIB_DIR/_internal" ] \
    && [ -z "$(find "$LIB_DIR" -mindepth 1 -maxdepth 1 ! -name "$NAME" ! -name _internal -print -quit)" ]
}
links_to_lib() {  # is $1 a symlink to LIB_DIR/cni-ipam (absolute, or relative to its directory)?
  local t
  [ -L "$1" ] || return 1
  t=$(readlink "$1")
  case "$t" in /*) ;; *) t=$(realpath -m -s "$(dirname "$1")/$t") ;; esac
  [ "$t" = "$LIB_DIR/$NAME" ]
}
ours() {  # is $TARGET something we installed: the executable, or a link of the earlier layout?
  if [ -L "$TARGET" ]; then
    links_to_lib "$TARGET" && { is_ours_dir || is_legacy_dir; }
  else
    [ -f "$TARGET" ] && grep -aqF cni_ipam_entry "$TARGET"  # a broken one of ours may be replaced
  fi
}
in_use() {  # does a running process execute or map a file under directory $1?
  local d p
  d=$(realpath -- "$1")
  for p in /proc/[0-9]*; do
    case "$(readlink "$p/exe" 2>/dev/null)" in "$d"/*) return 0 ;; esac
  done
  grep -lsF -- " $d/" /proc/[0-9]*/maps >/dev/null 2>&1
}
retire_lib_dir() {  # remove an earlier layout's LIB_DIR once nothing links to or runs from it
  [ -d "$LIB_DIR" ] && [ ! -L "$LIB_DIR" ] || return 0
  is_ours_dir || is_legacy_dir || return 0
  if is_ours_dir; then
    local other links
    links=$(sed -n 's/^link //p' "$LIB_DIR/$MANIFEST")  # (no process substitution: /dev/fd may be missing)
    while IFS= read -r other; do
      if [ -n "$other" ] && links_to_lib "$other"; then
        echo "install.sh: $other still links to $LIB_DIR; $LIB_DIR kept (install into $(dirname "$other") too)" >&2
        return 0
      fi
    done <<<"$links"
  fi
  if in_use "$LIB_DIR"; then
    echo "install.sh: a process still runs from $LIB_DIR; it is removed by the next install or uninstall" >&2
    return 0
  fi
  rm -rf -- "$LIB_DIR/versions" "$LIB_DIR/_internal"
  rm -f -- "$LIB_DIR/current" "$LIB_DIR/$NAME" "$LIB_DIR"/.current.tmp-* "$LIB_DIR"/.$NAME.tmp-* "$LIB_DIR/$MANIFEST"
  if rmdir -- "$LIB_DIR" 2>/dev/null; then
    echo "removed $LIB_DIR (the earlier layout)"
  else
    echo "install.sh: $LIB_DIR holds files that are not ours; they were left alone" >&2
  fi
}
stop_at() {  # a kill point for the crash tests: CNI_IPAM_INSTALL_KILL_AT=<step> SIGKILLs us there
  if [ "${CNI_IPAM_INSTALL_KILL_AT:-}" = "$1" ]; then kill -9 $$; fi
}
lock_bin_dir() { exec 9<"$BIN_DIR"; flock 9; }

# ------------------------------------------------------------------ uninstall
if [ "$UNINSTALL" = 1 ]; then

  if [ -d "$BIN_DIR" ]; then
    lock_bin_dir
    if [ -e "$TARGET" ] || [ -L "$TARGET" ]; then
      if ours; then
        rm -f -- "$TARGET"
        echo "removed $TARGET"
      else
        echo "install.sh: $TARGET is not ours; left alone" >&2
        exit 1
      fi
    fi
    rm -f -- "$BIN_DIR"/.$NAME.tmp-*
  fi
  retire_lib_dir
  made=()
  if [ -f "$BIN_DIR/$CREATED" ] && [ ! -L "$BIN_DIR/$CREATED" ]; then
    mapfile -t made < "$BIN_DIR/$CREATED"
    rm -f -- "$BIN_DIR/$CREATED"
  fi
  if [ -d "$BIN_DIR" ] && rmdir -- "$BIN_DIR" 2>/dev/null; then  # only when empty
    echo "removed $BIN_DIR"
    for (( i = ${#made[@]} - 1; i >= 0; i-- )); do  # the parents it made, deepest first, when empty
      case "$BIN_DIR" in "${made[$i]}"/*) ;; *) continue ;; esac  # ancestors of BIN_DIR only
      if rmdir -- "${made[$i]}" 2>/dev/null; then echo "removed ${made[$i]}"; fi
    done
  fi
  echo "cni-ipam uninstalled (reservation data left in place)"
  exit 0
fi

# ------------------------------------------------------------------ install
if [ -z "$FROM" ]; then
  [ -f "$ROOT/dist/$NAME" ] || die "no build found at $ROOT/dist/$NAME; run scripts/build.sh first (or pass --from)"
  FROM="$ROOT/dist/$NAME"
fi
[ -e "$FROM" ] || die "$FROM does not exist"
[ -d "$FROM" ] && die "$FROM is a directory: cni-ipam is one executable file now (scripts/build.sh prints its path)"
[ -f "$FROM" ] || die "$FROM is not a regular file"

made=()
d=$(dirname "$BIN_DIR")
while [ ! -e "$d" ] && [ ! -L "$d" ]; do made=("$d" ${made[@]+"${made[@]}"}); d=$(dirname "$d"); done
mkdir -p -- "$BIN_DIR"
lock_bin_dir
if [ ${#made[@]} -gt 0 ]; then printf '%s\n' "${made[@]}" > "$BIN_DIR/$CREATED"; fi

if [ -e "$TARGET" ] || [ -L "$TARGET" ]; then
  ours || die "$TARGET exists and is not a cni-ipam install; remove it first"
fi
[ "$(id -u)" = 0 ] || echo "install.sh: warning: not root: the installed file belongs to $(id -un), not root" >&2

rm -f -- "$BIN_DIR"/.$NAME.tmp-*   # leftovers of an install that was killed part-way (we hold the lock)
tmp="$BIN_DIR/.$NAME.tmp-$$"
trap 'rm -f -- "$tmp"' EXIT
cp -- "$FROM" "$tmp"
if [ "$(id -u)" = 0 ]; then chown 0:0 "$tmp"; fi
chmod 0755 "$tmp"
stop_at copied
answers_version "$tmp" || die "$FROM does not answer CNI_COMMAND=VERSION and 'version'; nothing changed"
stop_at checked
mv -Tf -- "$tmp" "$TARGET"
trap - EXIT
stop_at switched
answers_version "$TARGET" || die "the installed $TARGET does not answer CNI_COMMAND=VERSION"
retire_lib_dir
stop_at cleaned
echo "installed $TARGET"
echo "use \"type\": \"$NAME\" in the ipam section of a network config whose runtime searches $BIN_DIR"
