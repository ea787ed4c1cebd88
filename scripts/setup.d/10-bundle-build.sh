#!/usr/bin/env bash
# Prepare the bundle build (scripts/build.sh --prepare): the apt packages it needs (gcc,
# python3.11-dev, ...) and its build venv build/embed-venv (Debian's python3.11 with pyproject.toml's
# dependencies), so a test run that builds the bundle into a temp dir writes nothing into the checkout.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash scripts/build.sh --prepare
