#!/usr/bin/env bash
# Install a released checkout of meter-gateway on a Debian edge box:
#   a system user, /etc/meter-gateway (config), /var/lib/meter-gateway (spool, store),
#   a virtual environment under /opt/meter-gateway, and the systemd unit.
# Usage: deploy/install.sh [--root DIR] [--no-start]
#   --root DIR   install into DIR instead of / (packaging, tests); no user, no systemctl
#   --no-start   do not enable and start the service
set -euo pipefail

root=/
start=1
while [ $# -gt 0 ]; do
  case "$1" in
    --root) root=${2:?--root needs a directory}; shift 2 ;;
    --no-start) start=0; shift ;;
    *) echo "install.sh: unknown argument $1 (known: --root DIR, --no-start)" >&2; exit 2 ;;
  esac
done
src=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
root=$(cd "$root" && pwd)
r=${root%/}
user=meter-gateway

if [ "$r" = "" ] && [ "$(id -u)" -ne 0 ]; then
  echo "install.sh: run as root (or with --root DIR)" >&2
  exit 1
fi

if [ "$r" = "" ]; then
  if ! id -u "$user" >/dev/null 2>&1; then
    useradd --system --home-dir /var/lib/meter-gateway --no-create-home --shell /usr/sbin/nologin \
      --user-group --groups dialout "$user"
    echo "install.sh: created system user $user (member of dialout for serial meters)"
  fi
fi

install -d -m 0755 "$r/etc/meter-gateway" "$r/opt/meter-gateway" "$r/etc/systemd/system"
install -d -m 0750 "$r/var/lib/meter-gateway"
if [ ! -f "$r/etc/meter-gateway/config.toml" ]; then
  # The example, with the data directory of this layout.
  sed 's|^data_dir = .*|data_dir = "/var/lib/meter-gateway"|' "$src/deploy/config.example.toml" \
    > "$r/etc/meter-gateway/config.toml"
  chmod 0640 "$r/etc/meter-gateway/config.toml"
  echo "install.sh: wrote $r/etc/meter-gateway/config.toml from the example; edit it, then restart"
fi
if [ ! -f "$r/etc/meter-gateway/env" ]; then
  printf '# Secrets for meter-gateway, e.g.\n# METER_GATEWAY_STORAGE_DSN=postgresql://gateway:secret@db/meters\n' \
    > "$r/etc/meter-gateway/env"
  chmod 0600 "$r/etc/meter-gateway/env"
fi

venv="$r/opt/meter-gateway/venv"
PY=${PYTHON:-python3}
[ -x "$venv/bin/python" ] || "$PY" -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q "$src"
install -m 0644 "$src/deploy/systemd/meter-gateway.service" "$r/etc/systemd/system/meter-gateway.service"

if [ "$r" = "" ]; then
  chown -R "$user:$user" /var/lib/meter-gateway
  chgrp "$user" /etc/meter-gateway/config.toml /etc/meter-gateway/env
  if [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    if [ "$start" = 1 ]; then systemctl enable --now meter-gateway.service; fi
  else
    echo "install.sh: systemd is not running here; enable the unit later with: systemctl enable --now meter-gateway"
  fi
fi
echo "install.sh: installed into ${r:-/}"
