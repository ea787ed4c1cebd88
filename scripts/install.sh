#!/usr/bin/env bash
# Install the built cni-ipam binary into a CNI bin directory (idempotent, atomic upgrades), or remove it.
#
#   scripts/install.sh                       # dist/cni-ipam/ -> /opt/cni/cni-ipam.d/, link /opt/cni/bin/cni-ipam
#   scripts/install.sh --bin-dir DIR         # another CNI bin directory (e.g. /usr/lib/cni)
#   scripts/install.sh --lib-dir DIR         # where the bundles go (default: DIR/../cni-ipam.d)
#   scripts/install.sh --from PATH           # a built bundle directory or a onefile executable
#   scripts/install.sh --uninstall [--bin-dir DIR] [--lib-dir DIR]
#   scripts/install.sh --keep SECONDS        # keep replaced bundles this long (default 300)
#   scripts/install.sh --relative            # BIN_DIR/cni-ipam links to LIB_DIR by a relative path
#                                            # (for an installer container writing into a host mount)
#
# Interface (also for a container image whose entry point copies the bundle into a host directory):
# exit 0 = installed (or uninstalled) and the installed plugin answers CNI_COMMAND=VERSION (and its
# `version` command, which starts the bundle's Python); 1 = refused
# or failed, with the reason on stderr, nothing half-done left in use; 2 = usage error.  The first
# line of stdout is "installed <link> ...".  Run it as root: files are installed root:root, 0755 for
# directories and executables, 0644 for everything else, whatever the owner of the bundle (the build
# user) and the umask; nothing is group- or world-writable.
#
# Layout (docs/security.md):  LIB_DIR/versions/<id>/   one complete bundle per install
#                             LIB_DIR/current          -> versions/<id>   (switched with one rename(2))
#                             LIB_DIR/cni-ipam         -> current/cni-ipam
#                             LIB_DIR/.cni-ipam-install  the manifest: what is ours
#                             BIN_DIR/cni-ipam         -> LIB_DIR/cni-ipam
# An upgrade copies the new bundle into a new versions/<id>, checks that it answers VERSION, then
# switches `current` with one rename: a plugin call sees the old bundle or the new one, never none.
# Replaced bundles stay while a process runs from them and for --keep seconds.  Installs and
# uninstalls of one LIB_DIR take a lock (flock on LIB_DIR's parent directory).  A onefile build is
# copied into the bin directory as a regular file (temporary file + rename).
#
# Safety: the installer refuses a --lib-dir that is a symlink, equal to or inside --bin-dir (or the
# reverse), or an existing non-empty directory that it did not make (no manifest); it never removes
# anything that is not listed as its own, and never follows a symlink to delete.  Reservations under
# /var/lib/cni/networks are never touched.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN_DIR=/opt/cni/bin
LIB_DIR=
FROM=
UNINSTALL=0
KEEP=300
RELATIVE=0
NAME=cni-ipam
MANIFEST=.cni-ipam-install
MANIFEST_HEAD="# cni-ipam install manifest 1: this directory and the entries below belong to scripts/install.sh"

die() { echo "install.sh: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
  case "$1" in
    --bin-dir) BIN_DIR=${2:?--bin-dir needs a directory}; shift ;;
    --lib-dir) LIB_DIR=${2:?--lib-dir needs a directory}; shift ;;
    --from) FROM=${2:?--from needs a path}; shift ;;
    --keep) KEEP=${2:?--keep needs seconds}; shift ;;
    --uninstall) UNINSTALL=1 ;;
    --relative) RELATIVE=1 ;;
    -h|--help) sed -n '2,36p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
case "$KEEP" in ''|*[!0-9]*) echo "install.sh: --keep takes whole seconds" >&2; exit 2 ;; esac
umask 022

# Absolute paths without resolving a symlink in the last component: that one is checked, not followed.
BIN_DIR=$(realpath -m -s "$BIN_DIR")
[ -n "$LIB_DIR" ] || LIB_DIR="$(dirname "$BIN_DIR")/$NAME.d"
LIB_DIR=$(realpath -m -s "$LIB_DIR")
LINK="$BIN_DIR/$NAME"
LINK_TARGET="$LIB_DIR/$NAME"
[ "$RELATIVE" = 1 ] && LINK_TARGET=$(realpath -m -s --relative-to="$BIN_DIR" "$LIB_DIR/$NAME")

# ------------------------------------------------------------------ refuse dangerous targets
[ -L "$LIB_DIR" ] && die "--lib-dir $LIB_DIR is a symlink; give the real directory"
[ -L "$BIN_DIR" ] && [ ! -d "$BIN_DIR" ] && die "--bin-dir $BIN_DIR is a dangling symlink"
REAL_BIN=$(realpath -m "$BIN_DIR")
REAL_LIB=$(realpath -m "$LIB_DIR")
for pair in "$REAL_LIB|$REAL_BIN" "$REAL_BIN|$REAL_LIB"; do
  a=${pair%%|*} b=${pair#*|}
  if [ "$a" = "$b" ] || [ "${a#"$b"/}" != "$a" ] || [ "$b" = / ]; then
    die "--lib-dir $LIB_DIR and --bin-dir $BIN_DIR must be separate directories, neither inside the other"
  fi
done
case "$REAL_LIB" in
  /|/bin|/boot|/dev|/etc|/home|/lib|/lib64|/opt|/proc|/root|/run|/sbin|/srv|/sys|/tmp|/usr|/usr/*bin|/usr/lib|/usr/lib64|/usr/local|/var|/var/lib)
    die "--lib-dir $LIB_DIR is a system directory; give a directory of its own (e.g. /opt/cni/$NAME.d)" ;;
esac
[ -e "$LIB_DIR" ] && [ ! -d "$LIB_DIR" ] && die "--lib-dir $LIB_DIR exists and is not a directory"

is_ours_dir() { [ -f "$LIB_DIR/$MANIFEST" ] && [ ! -L "$LIB_DIR/$MANIFEST" ] && head -n1 "$LIB_DIR/$MANIFEST" | grep -qxF "$MANIFEST_HEAD"; }

answers_version() {  # does "$1" answer CNI_COMMAND=VERSION, and does its Python side start?
  local out
  out=$(env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin CNI_COMMAND=VERSION "$1" </dev/null 2>/dev/null) && grep -q supportedVersions <<<"$out" || return 1
  # The launcher answers VERSION without starting Python; `cni-ipam version` loads the rest of the bundle.
  out=$(env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin "$1" version </dev/null 2>/dev/null) && grep -q '^cni-ipam ' <<<"$out"
}

# A main-branch install before this layout: LIB_DIR held the bundle itself (cni-ipam + _internal).
is_legacy_dir() {
  [ -d "$LIB_DIR" ] && ! is_ours_dir && [ -f "$LIB_DIR/$NAME" ] && [ ! -L "$LIB_DIR/$NAME" ] \
    && [ "$(readlink "$LINK" 2>/dev/null)" = "$LIB_DIR/$NAME" ] \
    && [ -z "$(find "$LIB_DIR" -mindepth 1 -maxdepth 1 ! -name "$NAME" ! -name _internal -print -quit)" ] \
    && answers_version "$LIB_DIR/$NAME"
}

links_to_us() {  # is $1 a symlink to LIB_DIR/cni-ipam (absolute, or relative to its directory)?
  local t
  [ -L "$1" ] || return 1
  t=$(readlink "$1")
  case "$t" in /*) ;; *) t=$(realpath -m -s "$(dirname "$1")/$t") ;; esac
  [ "$t" = "$LIB_DIR/$NAME" ]
}

ours_link() {  # is $LINK something we installed (a link to LIB_DIR/cni-ipam, or our onefile binary)?
  if [ -L "$LINK" ]; then
    links_to_us "$LINK"
  else
    [ -f "$LINK" ] && answers_version "$LINK" && grep -aq cni_ipam_entry "$LINK"
  fi
}

replace_link() {  # replace_link TARGET PATH: PATH becomes a symlink to TARGET with one rename(2)
  local tmp
  tmp="$(dirname "$2")/.$(basename "$2").tmp-$$"
  rm -f -- "$tmp"
  ln -s -- "$1" "$tmp"
  mv -Tf -- "$tmp" "$2"
}

in_use() {  # does a running process execute or map a file under directory $1?
  local d p
  d=$(realpath -- "$1")  # what /proc shows: no symlink in it
  for p in /proc/[0-9]*; do
    case "$(readlink "$p/exe" 2>/dev/null)" in "$d"/*) return 0 ;; esac
  done
  grep -lsF -- " $d/" /proc/[0-9]*/maps >/dev/null 2>&1
}

stop_at() {  # a kill point for the crash tests: CNI_IPAM_INSTALL_KILL_AT=<step> SIGKILLs us there
  if [ "${CNI_IPAM_INSTALL_KILL_AT:-}" = "$1" ]; then kill -9 $$; fi
}

# ------------------------------------------------------------------ the lock
if [ "$UNINSTALL" = 1 ]; then
  if [ -d "$(dirname "$LIB_DIR")" ]; then exec 9<"$(dirname "$LIB_DIR")"; flock 9; fi
  status=0
  if [ -e "$LINK" ] || [ -L "$LINK" ]; then
    if ours_link; then
      rm -f -- "$LINK"
      echo "removed $LINK"
    else
      echo "install.sh: $LINK is not ours (not a link to $LIB_DIR/$NAME); left alone, and $LIB_DIR with it" >&2
      exit 1
    fi
  fi
  if [ -d "$LIB_DIR" ]; then
    if is_ours_dir || is_legacy_dir; then
      if is_ours_dir; then  # other bin directories this lib dir was linked from
        sed -n 's/^link //p' "$LIB_DIR/$MANIFEST" | while IFS= read -r other; do
          if links_to_us "$other"; then rm -f -- "$other" && echo "removed $other"; fi
        done
      fi
      rm -rf -- "$LIB_DIR/versions" "$LIB_DIR/_internal"
      rm -f -- "$LIB_DIR/current" "$LIB_DIR/$NAME" "$LIB_DIR"/.current.tmp-* "$LIB_DIR"/.$NAME.tmp-* "$LIB_DIR/$MANIFEST"
      if rmdir -- "$LIB_DIR" 2>/dev/null; then
        echo "removed $LIB_DIR"
      else
        echo "install.sh: $LIB_DIR holds files that are not ours; they were left alone" >&2
        status=1
      fi
    else
      echo "install.sh: $LIB_DIR has no cni-ipam manifest; left alone" >&2
      status=1
    fi
  fi
  echo "cni-ipam uninstalled (reservation data left in place)"
  exit $status
fi

# ------------------------------------------------------------------ the source
if [ -z "$FROM" ]; then
  if [ -x "$ROOT/dist/$NAME/$NAME" ]; then
    FROM="$ROOT/dist/$NAME"
  elif [ -f "$ROOT/dist/$NAME" ]; then
    FROM="$ROOT/dist/$NAME"
  else
    die "no build found under $ROOT/dist; run scripts/build.sh first (or pass --from)"
  fi
fi
FROM=$(realpath "$FROM")
mkdir -p -- "$(dirname "$LIB_DIR")" "$BIN_DIR"
exec 9<"$(dirname "$LIB_DIR")"
flock 9

if [ -e "$LINK" ] || [ -L "$LINK" ]; then
  ours_link || die "$LINK exists and is not a cni-ipam install; remove it first"
fi
[ "$(id -u)" = 0 ] || echo "install.sh: warning: not root: the installed files belong to $(id -un), not root" >&2

fix_ownership_and_modes() {  # root:root, 0755 dirs and executables, 0644 the rest; no special files
  local dir=$1 bad real
  [ -d "$dir" ] && [ ! -L "$dir" ] || die "the bundle $FROM changed while it was copied; refused"
  real=$(realpath "$dir")
  bad=$(find "$dir" ! -type d ! -type f ! -type l -print -quit)
  [ -z "$bad" ] || die "the bundle holds a special file (${bad#"$dir"/}); refused"
  while IFS= read -r -d '' l; do
    case "$(realpath -m "$l")" in
      "$real"/*) ;;
      *) die "the bundle holds a symlink leading outside it (${l#"$dir"/}); refused" ;;
    esac
  done < <(find "$dir" -type l -print0)
  if [ "$(id -u)" = 0 ]; then chown -R -h 0:0 "$dir"; fi
  find "$dir" -type d -exec chmod 0755 {} +
  find "$dir" -type f -perm /111 -exec chmod 0755 {} +
  find "$dir" -type f ! -perm /111 -exec chmod 0644 {} +
}

if [ ! -d "$FROM" ]; then
  # onefile: one regular file, root:root 0755, replaced atomically.
  [ -f "$FROM" ] || die "$FROM is neither a bundle directory nor a file"
  tmp="$BIN_DIR/.$NAME.tmp-$$"
  trap 'rm -f -- "$tmp"' EXIT
  cp -- "$FROM" "$tmp"
  [ "$(id -u)" = 0 ] && chown 0:0 "$tmp"
  chmod 0755 "$tmp"
  answers_version "$tmp" || die "$FROM does not answer CNI_COMMAND=VERSION; nothing changed"
  mv -Tf -- "$tmp" "$LINK"
  trap - EXIT
  answers_version "$LINK" || die "the installed $LINK does not answer CNI_COMMAND=VERSION"
  echo "installed $LINK"
  exit 0
fi

[ -f "$FROM/$NAME" ] && [ -x "$FROM/$NAME" ] || die "$FROM/$NAME is not an executable bundle"

# ------------------------------------------------------------------ the lib dir: ours, empty, or legacy
LEGACY=0
if [ -d "$LIB_DIR" ] && ! is_ours_dir; then
  if is_legacy_dir; then
    LEGACY=1
  elif [ -n "$(find "$LIB_DIR" -mindepth 1 -maxdepth 1 -print -quit)" ]; then
    die "--lib-dir $LIB_DIR exists, is not empty and has no cni-ipam manifest: it is not ours; refused"
  fi
fi
mkdir -p -- "$LIB_DIR/versions"
chmod 0755 "$LIB_DIR" "$LIB_DIR/versions"
if ! is_ours_dir; then
  printf '%s\n' "$MANIFEST_HEAD" "versions/" "current" "$NAME" "$MANIFEST" > "$LIB_DIR/$MANIFEST.tmp-$$"
  chmod 0644 "$LIB_DIR/$MANIFEST.tmp-$$"
  mv -Tf -- "$LIB_DIR/$MANIFEST.tmp-$$" "$LIB_DIR/$MANIFEST"
fi
grep -qxF "link $LINK" "$LIB_DIR/$MANIFEST" || echo "link $LINK" >> "$LIB_DIR/$MANIFEST"
[ "$LEGACY" = 1 ] && echo "legacy _internal" >> "$LIB_DIR/$MANIFEST"

# Leftovers of an install that was killed part-way (we hold the lock: nobody else is copying).
find "$LIB_DIR/versions" -mindepth 1 -maxdepth 1 -name '.tmp-*' -exec rm -rf -- {} +
rm -f -- "$LIB_DIR"/.current.tmp-* "$LIB_DIR"/.$NAME.tmp-*

# ------------------------------------------------------------------ copy, check, switch
# A hard link could make root copy (and publish, 0644) a file the build user cannot read.
hard=$(find "$FROM" -type f -links +1 -print -quit)
[ -z "$hard" ] || die "the bundle holds a hard-linked file (${hard#"$FROM"/}); refused"
ID="$(date -u +%Y%m%dT%H%M%S).$(date +%N).$$"
STAGE="$LIB_DIR/versions/.tmp-$ID"
trap 'rm -rf -- "$STAGE"' EXIT
cp -R -P -- "$FROM" "$STAGE"
fix_ownership_and_modes "$STAGE"
stop_at copied
mv -T -- "$STAGE" "$LIB_DIR/versions/$ID"
trap - EXIT
answers_version "$LIB_DIR/versions/$ID/$NAME" || {
  rm -rf -- "${LIB_DIR:?}/versions/$ID"
  die "the new bundle does not answer CNI_COMMAND=VERSION; the installed one is unchanged"
}
stop_at checked
PREVIOUS=$(readlink "$LIB_DIR/current" 2>/dev/null || true)
replace_link "versions/$ID" "$LIB_DIR/current"
stop_at switched
[ "$(readlink "$LIB_DIR/$NAME" 2>/dev/null)" = "current/$NAME" ] || replace_link "current/$NAME" "$LIB_DIR/$NAME"
[ "$(readlink "$LINK" 2>/dev/null)" = "$LINK_TARGET" ] || replace_link "$LINK_TARGET" "$LINK"
stop_at linked
if ! answers_version "$LINK"; then
  if [ -n "$PREVIOUS" ] && [ -d "$LIB_DIR/$PREVIOUS" ]; then replace_link "$PREVIOUS" "$LIB_DIR/current"; fi
  die "the installed $LINK does not answer CNI_COMMAND=VERSION; switched back to ${PREVIOUS:-nothing}"
fi

# ------------------------------------------------------------------ retire old bundles
if [ -d "$LIB_DIR/_internal" ] && grep -qxF "legacy _internal" "$LIB_DIR/$MANIFEST" && ! in_use "$LIB_DIR/_internal"; then
  rm -rf -- "$LIB_DIR/_internal"  # the bundle of a pre-manifest install, replaced above
fi
for d in "$LIB_DIR"/versions/*/; do
  d=${d%/}
  [ -d "$d" ] && [ ! -L "$d" ] || continue
  [ "versions/$(basename "$d")" = "versions/$ID" ] && continue
  stamp="$LIB_DIR/versions/.retired-$(basename "$d")"
  [ -f "$stamp" ] || : > "$stamp"   # when it stopped being current
  age=$(( $(date +%s) - $(stat -c %Y "$stamp") ))
  if [ "$age" -ge "$KEEP" ] && ! in_use "$d"; then
    rm -rf -- "$d" "$stamp"
  fi
done
for stamp in "$LIB_DIR"/versions/.retired-*; do
  [ -e "$stamp" ] && [ ! -d "$LIB_DIR/versions/${stamp##*/.retired-}" ] && rm -f -- "$stamp"
done
stop_at cleaned

echo "installed $LINK -> $LIB_DIR/$NAME -> $(readlink "$LIB_DIR/current")"
echo "use \"type\": \"cni-ipam\" in the ipam section of a network config whose runtime searches $BIN_DIR"
