# shellcheck shell=bash
# Sourced by the scripts: the project virtual environment in <checkout>/.venv, never the machine's Python.
#
#   ensure_venv EXTRA   create .venv if it is missing or broken (Debian: python3-venv, installed when
#                       root), then `pip install -e ".[EXTRA]"` into it (EXTRA "base": the package and
#                       its dependencies only), again only when pyproject.toml changed since the last
#                       install (a stamp file inside .venv).
#   VENV_PY             the venv's interpreter, set by ensure_venv (.venv/bin/python, not resolved:
#                       resolving the link would leave the venv)
#
# PYTHON=/path/to/python3 picks the interpreter the venv is made from (default: python3 on PATH).
# Nothing is ever installed into that interpreter itself.

_venv_root() { cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd; }

_venv_pip() {  # pip into the venv, without the index's "Location ... is ignored" noise
  local rc=0
  { "$VENV_PY" -m pip install -q --disable-pip-version-check "$@" 2>&1 1>&3 3>&- \
      | { grep -v "^WARNING: Location '" || true; } >&2; } 3>&1 || rc=$?
  return $rc
}

ensure_venv() {
  local extra=${1:-}
  local root base venv stamp want
  root=$(_venv_root)
  venv="$root/.venv"
  VENV_PY="$venv/bin/python"
  base=${PYTHON:-python3}
  command -v "$base" >/dev/null || { echo "venv: $base not found (Debian: apt-get install python3)" >&2; return 1; }
  if ! "$VENV_PY" -c 'import sys; sys.exit(sys.prefix == sys.base_prefix)' 2>/dev/null \
      || ! "$VENV_PY" -m pip --version >/dev/null 2>&1; then
    if ! "$base" -c 'import ensurepip, venv' 2>/dev/null; then
      if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
        echo "venv: installing python3-venv (Debian's python3 needs it for python3 -m venv)" >&2
        DEBIAN_FRONTEND=noninteractive flock /tmp/apt.lock apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
      else
        echo "venv: $base cannot make a virtual environment (Debian: apt-get install python3-venv)" >&2
        return 1
      fi
    fi
    echo "venv: creating $venv with $base" >&2
    rm -rf "$venv"
    "$base" -m venv "$venv"
  fi
  [ -n "$extra" ] || return 0
  local hash spec=".[$extra]"
  [ "$extra" = base ] && spec=.
  stamp="$venv/.cni-ipam-installed"
  hash=$(sha256sum "$root/pyproject.toml" | cut -d' ' -f1)
  want="$extra $hash"
  # Each extra is installed once per pyproject.toml version; several extras may share a venv, and
  # any of them brings the base package.
  if ! grep -qxF "$want" "$stamp" 2>/dev/null && ! { [ "$extra" = base ] && grep -q " $hash\$" "$stamp" 2>/dev/null; }; then
    echo "venv: pip install -e '$spec' into $venv" >&2
    (cd "$root" && _venv_pip -e "$spec")
    # setuptools leaves <name>.egg-info in the source tree; the editable install does not use it
    # (its metadata is in the venv's site-packages), and the checkout stays as it was.
    rm -rf "$root/cni_ipam.egg-info"
    echo "$want" >>"$stamp"
  fi
}
