#!/usr/bin/env bash
# One command to set everything up on a fresh Debian 12 (Python 3.11, root or sudo) and
#   demo    : run the demo (simulated meters, a private Mosquitto, the embedded store, the API)
#   test    : run the whole test suite (real Mosquitto, PostgreSQL 15 + TimescaleDB, pymodbus)
#   install : only create .venv with the project (what the container image build runs)
# Idempotent: a second run installs nothing and starts at once.
set -euo pipefail

mode=${1:-}
shift || true
case "$mode" in
  demo|test|install) ;;
  *) echo "usage: $0 demo|test|install [extra arguments for the demo or pytest]" >&2; exit 2 ;;
esac

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
apt_updated=""

apt_install() {
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "bootstrap: installing ${missing[*]} from Debian's packages"
  if [ -z "$apt_updated" ]; then $SUDO apt-get update -qq; apt_updated=1; fi
  # policy-rc.d keeps package scripts from starting system services we do not use:
  # the tests and the demo start their own private instances on free ports.
  $SUDO sh -c 'printf "#!/bin/sh\nexit 101\n" > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d'
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || { $SUDO rm -f /usr/sbin/policy-rc.d; return 1; }
  $SUDO rm -f /usr/sbin/policy-rc.d
}

if [ "$mode" != install ]; then
  command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || apt_install mosquitto
fi
if [ "$mode" = test ]; then
  [ -x /usr/lib/postgresql/15/bin/initdb ] || apt_install postgresql-15
  command -v runuser >/dev/null 2>&1 || apt_install util-linux
  # promtool checks the shipped Prometheus alert rules against real /metrics output.
  command -v promtool >/dev/null 2>&1 || apt_install prometheus
  # The status page is tested in a real headless browser: Debian's chromium, driven by Playwright's
  # Python package (never `playwright install`), plus a font so screenshots show text on a minimal system.
  [ -x /usr/bin/chromium ] || apt_install chromium fonts-dejavu-core
  # Serial RTU tests run over a pseudo-terminal pair made by socat.
  command -v socat >/dev/null 2>&1 || apt_install socat
  # Tests publish with Mosquitto's own client too, a publisher we did not write.
  command -v mosquitto_pub >/dev/null 2>&1 || apt_install mosquitto-clients
  bash deploy/scripts/install-timescaledb.sh
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  if ! "$PY" -m venv .venv >/dev/null 2>&1; then
    rm -rf .venv
    apt_install python3-venv
    "$PY" -m venv .venv
  fi
fi
stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)-$mode
if [ ! -f "$stamp" ]; then
  echo "bootstrap: installing Python packages into .venv"
  .venv/bin/python -m pip install -q --upgrade pip
  if [ "$mode" = test ]; then .venv/bin/pip install -q -e '.[test]'; else .venv/bin/pip install -q -e .; fi
  touch "$stamp"
fi

if [ "$mode" = install ]; then
  echo "bootstrap: .venv ready ($(.venv/bin/meter-gateway --help >/dev/null && echo meter-gateway installed))"
elif [ "$mode" = demo ]; then
  exec .venv/bin/meter-gateway demo "$@"
else
  exec .venv/bin/python -m pytest -q "$@"
fi
