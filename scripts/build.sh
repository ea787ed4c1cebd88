#!/usr/bin/env bash
# Build the cni-ipam binary with PyInstaller: one command, prints where the binary is.
#
#   scripts/build.sh                 # onedir bundle: dist/cni-ipam/cni-ipam (the fast form)
#   scripts/build.sh --onefile       # single file: dist/cni-ipam (about 10x slower to start)
#   scripts/build.sh --importtime    # profiling build with -X importtime baked in
#   scripts/build.sh --stock         # keep PyInstaller's default run-time hooks (baseline)
#   scripts/build.sh --archive       # modules in the PYZ archive instead of .pyc files (baseline)
#   scripts/build.sh --dist DIR      # output directory (default dist/)
#
# Builds with the project virtual environment .venv/ (scripts/venv.sh: made when missing, this package
# and its "build" extra, PyInstaller, installed into it), never the machine's Python;
# PYTHON=/path/to/a/venv/python builds with that interpreter instead (pip-installing into it when
# PyInstaller is missing).  Then: scripts/install.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
DIST="$ROOT/dist"
WORK="$ROOT/build/pyinstaller"
NAME=cni-ipam

while [ $# -gt 0 ]; do
  case "$1" in
    --onefile) export CNI_IPAM_ONEFILE=1 ;;
    --importtime) export CNI_IPAM_IMPORTTIME=1; NAME=cni-ipam-importtime ;;
    --stock) export CNI_IPAM_STOCK_BOOT=1; NAME=cni-ipam-stock ;;
    --archive) export CNI_IPAM_ARCHIVE=1 ;;
    --dist) DIST=$(realpath -m "$2"); shift ;;
    --work) WORK=$(realpath -m "$2"); shift ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "build.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
export CNI_IPAM_NAME=$NAME

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
# Smoke test: the VERSION verb must answer with the supported versions.
if ! CNI_COMMAND=VERSION "$EXE" </dev/null | grep -q supportedVersions; then
  echo "build: $EXE does not answer CNI_COMMAND=VERSION" >&2
  exit 1
fi
for mod in pyroute2 yaml prometheus_client; do
  "$PY" -c "import $mod" 2>/dev/null || echo "build: note: $mod is not installed, so the admin commands that need it are not in the bundle" >&2
done
echo "$EXE"
