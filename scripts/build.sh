#!/usr/bin/env bash
# Build the shipped cni-ipam bundle: one command, prints where the executable is.
#
#   scripts/build.sh                 # self-contained onedir bundle: dist/cni-ipam/cni-ipam (the shipped form)
#   scripts/build.sh --link pie|shared  # launcher variants, for measuring (default static)
#   scripts/build.sh --no-freeze     # plugin-path modules as .pyc files only, not frozen into the launcher (measuring)
#   scripts/build.sh --prepare       # only install what the build needs (apt, build venv), build nothing
#   scripts/build.sh --venv DIR      # the build virtual environment (default build/embed-venv)
#   scripts/build.sh --dist DIR      # output directory (default dist/)
#   scripts/build.sh --pyinstaller   # the PyInstaller onedir bundle instead (the previous form, for comparison)
#   scripts/build.sh --pyinstaller --onefile     # single file: dist/cni-ipam (about 10x slower to start)
#   scripts/build.sh --pyinstaller --importtime  # profiling build with -X importtime baked in
#   scripts/build.sh --pyinstaller --stock       # keep PyInstaller's default run-time hooks (baseline)
#   scripts/build.sh --pyinstaller --archive     # modules in the PYZ archive instead of .pyc files (baseline)
#   scripts/build.sh --pyinstaller --work DIR    # PyInstaller's work directory (default build/pyinstaller)
#
# The default build (packaging/build_bundle.py) needs no PyInstaller: a small C launcher
# (packaging/launcher.c) embeds Debian's CPython 3.11 (libpython3.11.a from python3.11-dev, linked in
# statically) and runs packaging/cni_ipam_entry.py; the bundle carries the stdlib, cni_ipam and the
# third-party packages as .pyc files, the extension modules and the shared libraries they need
# (found through the launcher's $ORIGIN rpath).  Nothing of the node's Python is used at run time.
# Build needs (installed with apt-get when missing and root): gcc, python3.11, python3.11-dev,
# python3.11-venv, zlib1g-dev, libexpat1-dev.  The third-party packages (pyproject.toml's
# dependencies) go into the build venv, made from /usr/bin/python3.11 (EMBED_PYTHON overrides it),
# never into the machine's Python.
#
# --pyinstaller builds with the project virtual environment .venv/ (scripts/venv.sh: made when
# missing, this package and its "build" extra, PyInstaller, installed into it), never the machine's
# Python; PYTHON=/path/to/a/venv/python builds with that interpreter instead (pip-installing into it
# when PyInstaller is missing).  Then: scripts/install.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
DIST="$ROOT/dist"
WORK="$ROOT/build/pyinstaller"
BVENV="$ROOT/build/embed-venv"
NAME=cni-ipam
MODE=launcher
LINK=static
FREEZE=()
PREPARE=0
PYI_ONLY=()

while [ $# -gt 0 ]; do
  case "$1" in
    --pyinstaller) MODE=pyinstaller ;;
    --onefile) export CNI_IPAM_ONEFILE=1; PYI_ONLY+=("$1") ;;
    --importtime) export CNI_IPAM_IMPORTTIME=1; NAME=cni-ipam-importtime; PYI_ONLY+=("$1") ;;
    --stock) export CNI_IPAM_STOCK_BOOT=1; NAME=cni-ipam-stock; PYI_ONLY+=("$1") ;;
    --archive) export CNI_IPAM_ARCHIVE=1; PYI_ONLY+=("$1") ;;
    --link) LINK=${2:?--link needs static, pie or shared}; shift ;;
    --no-freeze) FREEZE=(--no-freeze) ;;
    --prepare) PREPARE=1 ;;
    --venv) BVENV=$(realpath -m "${2:?--venv needs a directory}"); shift ;;
    --dist) DIST=$(realpath -m "${2:?--dist needs a directory}"); shift ;;
    --work) WORK=$(realpath -m "${2:?--work needs a directory}"); shift ;;
    -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
    *) echo "build.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
export CNI_IPAM_NAME=$NAME
if [ "$MODE" = launcher ] && [ ${#PYI_ONLY[@]} -gt 0 ]; then
  echo "build.sh: ${PYI_ONLY[*]} applies to --pyinstaller builds only" >&2
  exit 2
fi

smoke_test() {  # the VERSION verb must answer with the supported versions
  if ! CNI_COMMAND=VERSION "$1" </dev/null | grep -q supportedVersions; then
    echo "build: $1 does not answer CNI_COMMAND=VERSION" >&2
    exit 1
  fi
}

# ------------------------------------------------------------------ the launcher bundle (default)
if [ "$MODE" = launcher ]; then
  EMBED=${EMBED_PYTHON:-/usr/bin/python3.11}
  # shellcheck source=scripts/apt.sh
  . scripts/apt.sh
  need=(gcc python3.11 python3.11-dev python3.11-venv zlib1g-dev libexpat1-dev)
  [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null && ensure_apt "${need[@]}"
  for f in "$EMBED" "$("$EMBED" -c 'import sysconfig; print(sysconfig.get_config_var("LIBPL"))' 2>/dev/null)/libpython3.11.a"; do
    [ -e "$f" ] || { echo "build: $f missing (Debian: apt-get install ${need[*]})" >&2; exit 1; }
  done
  command -v gcc >/dev/null || { echo "build: gcc missing (apt-get install gcc)" >&2; exit 1; }

  # The build venv: the embedded interpreter's own packages (pyproject.toml's dependencies).
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
  [ "$PREPARE" = 1 ] && { echo "build: ready ($BVENV)" >&2; exit 0; }

  mkdir -p "$DIST"
  STAGE="$DIST/.$NAME.tmp-$$"
  trap 'rm -rf -- "$STAGE" "$DIST/.$NAME.old-$$"' EXIT
  rm -rf -- "$STAGE"
  "$BVENV/bin/python" packaging/build_bundle.py --out "$STAGE" --root "$ROOT" --name "$NAME" --link "$LINK" ${FREEZE[@]+"${FREEZE[@]}"}
  smoke_test "$STAGE/$NAME"
  [ -e "$DIST/$NAME" ] && mv -T -- "$DIST/$NAME" "$DIST/.$NAME.old-$$"
  mv -T -- "$STAGE" "$DIST/$NAME"
  smoke_test "$DIST/$NAME/$NAME"
  echo "build: $(du -sh "$DIST/$NAME" | cut -f1) in $DIST/$NAME" >&2
  echo "$DIST/$NAME/$NAME"
  exit 0
fi

# ------------------------------------------------------------------ PyInstaller (--pyinstaller)
[ "$PREPARE" = 1 ] && { echo "build.sh: --prepare is for the launcher build" >&2; exit 2; }
if [ -n "${PYTHON:-}" ]; then
  PY=$PYTHON
else
  # shellcheck source=scripts/venv.sh
  . scripts/venv.sh
  ensure_venv build
  PY=$VENV_PY
fi

# PyInstaller bundles the shared libpython; Debian's python3 needs the libpython3.X package for it.
SONAME=$("$PY" -c 'import sysconfig; print(sysconfig.get_config_var("INSTSONAME") or "")')
LIBDIR=$("$PY" -c 'import sysconfig; print(sysconfig.get_config_var("LIBDIR") or "")')
if [ -n "$SONAME" ] && [ ! -e "$LIBDIR/$SONAME" ] && ! ldconfig -p 2>/dev/null | grep -q "$SONAME"; then
  PKG="lib$("$PY" -c 'import sys; print("python%d.%d" % sys.version_info[:2])')"
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "build: installing $PKG (PyInstaller needs $SONAME)" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$PKG" >/dev/null
  else
    echo "build: $SONAME not found; install it (Debian: apt-get install $PKG)" >&2
    exit 1
  fi
fi

if ! "$PY" -c "import PyInstaller" 2>/dev/null; then
  if ! "$PY" -c 'import sys; sys.exit(sys.prefix == sys.base_prefix)'; then
    echo "build: $PY is not a virtual environment and has no PyInstaller; leave PYTHON unset to build in .venv/" >&2
    exit 1
  fi
  echo "build: installing PyInstaller into $PY (pip install -e '.[build]')" >&2
  "$PY" -m pip install -q --disable-pip-version-check -e ".[build]"
fi

"$PY" -m PyInstaller --noconfirm --clean --log-level WARN \
  --distpath "$DIST" --workpath "$WORK" packaging/cni-ipam.spec

if [ "${CNI_IPAM_ONEFILE:-}" = 1 ]; then
  EXE="$DIST/$NAME"
else
  EXE="$DIST/$NAME/$NAME"
fi
smoke_test "$EXE"
for mod in pyroute2 yaml prometheus_client; do
  "$PY" -c "import $mod" 2>/dev/null || echo "build: note: $mod is not installed, so the admin commands that need it are not in the bundle" >&2
done
echo "$EXE"
