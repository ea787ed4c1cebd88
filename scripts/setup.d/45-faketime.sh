#!/usr/bin/env bash
# libfaketime for the cluster-pool tests that step the clock of one plugin process (a clock set back
# by NTP or a VM snapshot restore must not change what a node hands out).  Safe to run twice.
set -euo pipefail

# shellcheck source=scripts/apt.sh
. "$(dirname "$0")/../apt.sh"
ensure_apt faketime
echo "setup: $(dpkg-query -W -f='${Package} ${Version}' faketime)"
