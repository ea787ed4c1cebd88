#!/usr/bin/env bash
# The static checks of scripts/check.sh: shellcheck from apt (ruff and mypy come with the venv's
# "test" extra, pyproject.toml).  Idempotent: apt-get runs only when shellcheck is missing.
set -euo pipefail
# shellcheck source=scripts/apt.sh
. "$(dirname "$0")/../apt.sh"
ensure_apt shellcheck
