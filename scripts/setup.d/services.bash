# shellcheck shell=bash
# Sourced by the setup.d steps that install services (not a step itself: scripts/setup-test-env.sh
# runs the *.sh files only).
#
#   not_installed PKG   prints PKG when it is not installed yet (before ensure_apt)
#   quiet_service UNIT  disable and stop UNIT, which Debian enabled and started when the package was
#                       installed: the tests start the daemons they need themselves
not_installed() {
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed" || echo "$1"
}

quiet_service() {
  local unit=$1 name=${1%.*}
  systemctl disable "$unit" >/dev/null 2>&1 || true
  if [ -d /run/systemd/system ]; then
    systemctl stop "$unit" >/dev/null 2>&1 || true
  elif [ -x "/etc/init.d/$name" ]; then
    "/etc/init.d/$name" stop >/dev/null 2>&1 || true
  fi
  echo "setup: $unit disabled and stopped (installed by this setup; the tests do not use it)"
}
