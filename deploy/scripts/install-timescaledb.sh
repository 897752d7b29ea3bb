#!/usr/bin/env bash
# Build TimescaleDB (Apache edition) from Debian trixie's source package against the
# machine's PostgreSQL 15. Debian 12 ships no TimescaleDB package; see
# shared/notes/timescaledb.md for why this route. Idempotent: a no-op when the
# extension library is already installed.
set -euo pipefail

PG_MAJOR=${PG_MAJOR:-15}
TSDB_VERSION=${TSDB_VERSION:-2.19.3+dfsg-1+deb13u1}
PG_LIB=/usr/lib/postgresql/${PG_MAJOR}/lib

if [ -f "${PG_LIB}/timescaledb.so" ]; then
  echo "timescaledb: already installed in ${PG_LIB}"
  exit 0
fi

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive

need=()
for pkg in "postgresql-${PG_MAJOR}" "postgresql-server-dev-${PG_MAJOR}" cmake build-essential xz-utils dpkg-dev; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq "${need[@]}"
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# A private apt list holding only the trixie deb-src line, so that the machine's own
# package lists stay bookworm-only.
uri=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
uri=${uri:-http://deb.debian.org/debian}
mkdir -p "$work/lists/partial" "$work/src"
echo "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] ${uri} trixie main" > "$work/sources.list"
apt_opts=(-o "Dir::Etc::sourcelist=$work/sources.list" -o "Dir::Etc::sourceparts=-" -o "Dir::State::Lists=$work/lists")
$SUDO apt-get "${apt_opts[@]}" update -qq
(cd "$work/src" && apt-get "${apt_opts[@]}" source --download-only "timescaledb=${TSDB_VERSION}")
orig=$(ls "$work"/src/timescaledb_*.orig.tar.* | head -n 1)
mkdir -p "$work/build"
tar -xf "$orig" -C "$work/build" --strip-components=1
cd "$work/build"
./bootstrap -DAPACHE_ONLY=ON -DREGRESS_CHECKS=OFF -DTAP_CHECKS=OFF -DWARNINGS_AS_ERRORS=OFF \
  -DGENERATE_DOWNGRADE_SCRIPT=OFF -DPG_CONFIG="/usr/lib/postgresql/${PG_MAJOR}/bin/pg_config" >/dev/null
make -C build -j"$(nproc)" >/dev/null
$SUDO make -C build install >/dev/null
echo "timescaledb: installed ${TSDB_VERSION} into ${PG_LIB}"
