#!/usr/bin/env bash
# Starts the protocol peers the tests and benchmarks need, runs a command with them, and
# stops them on exit (also on failure, printing their log tails).
#
# On a fresh Debian machine with Rust it installs what is missing (moto server and sqlfluff
# from PyPI into virtual environments under ~/.cache, PostgreSQL and Chromium from Debian packages), starts both
# on free 127.0.0.1 ports with throwaway state, and exports TEST_INGEST_AWS_ENDPOINT and
# TEST_INGEST_POSTGRES_URL (plus dummy AWS credentials) to the command.
#
# Usage: scripts/peers.sh COMMAND [ARGS...]   run COMMAND with the peers up
#        scripts/peers.sh --serve             start them, print their endpoints and wait
set -euo pipefail

MOTO_VERSION="5.2.5"
# Parses the Redshift sink's SQL in the grammar gate (Redshift dialect).
SQLFLUFF_VERSION="4.5.0"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE_DIR="${TEST_INGEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/redshift-ingest}"
VENV="$CACHE_DIR/moto-$MOTO_VERSION"
SQLFLUFF_VENV="$CACHE_DIR/sqlfluff-$SQLFLUFF_VERSION"
SERVE=0
if [ "${1:-}" = "--serve" ]; then SERVE=1; shift; fi
if [ "$SERVE" = 0 ] && [ $# -eq 0 ]; then
  echo "usage: $0 --serve | $0 COMMAND [ARGS...]" >&2; exit 2
fi

log() { printf '[peers.sh] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else die "need root to run: $* (install it by hand, or run as root)"
  fi
}

APT_UPDATED=0
apt_install() {
  command -v apt-get >/dev/null 2>&1 || die "apt-get not found: install $* by hand"
  if [ "$APT_UPDATED" = 0 ]; then
    log "apt-get update"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    APT_UPDATED=1
  fi
  log "apt-get install $*"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

ensure_python() {
  command -v python3 >/dev/null 2>&1 || apt_install python3
  python3 -c 'import venv, ensurepip' 2>/dev/null || apt_install python3-venv
}

ensure_moto() {
  if [ -x "$VENV/bin/moto_server" ]; then return; fi
  log "installing moto[server]==$MOTO_VERSION into $VENV"
  rm -rf "$VENV"
  mkdir -p "$CACHE_DIR"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION"
}

ensure_sqlfluff() {
  if [ -x "$SQLFLUFF_VENV/bin/sqlfluff" ]; then return; fi
  log "installing sqlfluff==$SQLFLUFF_VERSION into $SQLFLUFF_VENV"
  rm -rf "$SQLFLUFF_VENV"
  mkdir -p "$CACHE_DIR"
  python3 -m venv "$SQLFLUFF_VENV"
  "$SQLFLUFF_VENV/bin/pip" install --quiet --disable-pip-version-check "sqlfluff==$SQLFLUFF_VERSION"
}

find_pg_bin() {
  ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}

ensure_postgres() {
  PG_BIN="$(find_pg_bin)"
  if [ -z "$PG_BIN" ] || [ ! -x "$PG_BIN/initdb" ]; then
    apt_install postgresql
    PG_BIN="$(find_pg_bin)"
  fi
  [ -x "$PG_BIN/initdb" ] || die "PostgreSQL server binaries not found after install"
}

STATE="$(mktemp -d /tmp/ingest-test.XXXXXX)"
MOTO_PID=""
PG_STARTED=0

# PostgreSQL refuses to run as root: use the postgres system user then.
pg_run() {
  if [ "$(id -u)" = 0 ]; then
    su postgres -s /bin/sh -c "$*"
  else
    sh -c "$*"
  fi
}

cleanup() {
  local status=$?
  if [ -n "$MOTO_PID" ]; then kill "$MOTO_PID" 2>/dev/null || true; wait "$MOTO_PID" 2>/dev/null || true; fi
  if [ "$PG_STARTED" = 1 ]; then pg_run "'$PG_BIN/pg_ctl' -D '$STATE/pg/data' -m immediate stop" >/dev/null 2>&1 || true; fi
  if [ $status -ne 0 ]; then
    for logfile in "$STATE/moto.log" "$STATE/pg/log"; do
      if [ -s "$logfile" ]; then log "last lines of $logfile:"; tail -n 20 "$logfile" >&2 || true; fi
    done
  fi
  rm -rf "$STATE"
  exit $status
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_for() {
  local what=$1 tries=$2; shift 2
  for _ in $(seq "$tries"); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  die "$what did not come up"
}

start_moto() {
  MOTO_PORT="$(free_port)"
  "$VENV/bin/moto_server" -H 127.0.0.1 -p "$MOTO_PORT" >"$STATE/moto.log" 2>&1 &
  MOTO_PID=$!
  wait_for "moto server on 127.0.0.1:$MOTO_PORT" 150 \
    python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$MOTO_PORT/moto-api/', timeout=1)"
  log "moto server $MOTO_VERSION on http://127.0.0.1:$MOTO_PORT"
}

# Headless Chromium for the status page's browser test (Debian's package).
ensure_chromium() {
  command -v chromium >/dev/null 2>&1 || apt_install chromium
}

ensure_openssl() {
  command -v openssl >/dev/null 2>&1 || apt_install openssl
}

# A throwaway CA and a server certificate for 127.0.0.1, so the warehouse's TLS path is
# tested with real certificate verification; and an unrelated CA that must be refused.
make_certificates() {
  local dir="$STATE/tls"
  mkdir -p "$dir"
  local ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
  for ca in ca other-ca; do
    openssl req -x509 "${ec[@]}" -days 2 -subj "/CN=redshift-ingest test $ca" \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
      -keyout "$dir/$ca.key" -out "$dir/$ca.crt" 2>/dev/null
  done
  openssl req "${ec[@]}" -subj "/CN=localhost" -keyout "$dir/server.key" -out "$dir/server.csr" 2>/dev/null
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n' >"$dir/server.ext"
  openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial \
    -days 2 -extfile "$dir/server.ext" -out "$dir/server.crt" 2>/dev/null
  chmod 600 "$dir/server.key"
}

start_postgres() {
  PG_PORT="$(free_port)"
  mkdir -p "$STATE/pg"
  make_certificates
  if [ "$(id -u)" = 0 ]; then chown postgres "$STATE" "$STATE/pg" "$STATE/tls/server.key"; chmod 755 "$STATE" "$STATE/tls"; fi
  pg_run "'$PG_BIN/initdb' -D '$STATE/pg/data' -U postgres --auth=trust -E UTF8 --no-locale --no-sync" >"$STATE/initdb.log" 2>&1 \
    || { cat "$STATE/initdb.log" >&2; die "initdb failed"; }
  # One role logs in with a password (every other is trusted): the tests of a password
  # rotated under a running processor (28P01 on reconnect) need a server that checks it.
  pg_run "sed -i '1i host all password_login 127.0.0.1/32 scram-sha-256' '$STATE/pg/data/pg_hba.conf'"
  local options="-c listen_addresses=127.0.0.1 -p $PG_PORT -k '$STATE/pg' -c fsync=off -c max_connections=200 -c ssl=on -c ssl_cert_file='$STATE/tls/server.crt' -c ssl_key_file='$STATE/tls/server.key'"
  local start="'$PG_BIN/pg_ctl' -D '$STATE/pg/data' -l '$STATE/pg/log' -w -t 60 -o \"$options\" start"
  pg_run "$start" >/dev/null
  PG_STARTED=1
  # For the fault tests: `pg-ctl crash` stops the server the way a crash or a failover
  # does (immediate shutdown, no checkpoint), `pg-ctl start` brings it back.
  cat >"$STATE/pg-ctl" <<SCRIPT
#!/bin/sh
set -e
run() { if [ "\$(id -u)" = 0 ]; then su postgres -s /bin/sh -c "\$1"; else sh -c "\$1"; fi; }
case "\$1" in
  crash) run "'$PG_BIN/pg_ctl' -D '$STATE/pg/data' -m immediate -w stop" ;;
  start) run "$(printf '%s' "$start" | sed 's/\\/\\\\/g; s/"/\\"/g')" ;;
  *) echo "usage: \$0 crash|start" >&2; exit 2 ;;
esac
SCRIPT
  chmod 755 "$STATE/pg-ctl"
  log "PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$PG_PORT"
}

ensure_python
ensure_moto
ensure_sqlfluff
ensure_postgres
ensure_openssl
ensure_chromium
start_moto
start_postgres

export TEST_INGEST_AWS_ENDPOINT="http://127.0.0.1:$MOTO_PORT"
export TEST_INGEST_POSTGRES_URL="postgres://postgres@127.0.0.1:$PG_PORT/postgres"
# The server also speaks TLS with a certificate from this CA (see make_certificates).
export TEST_INGEST_POSTGRES_CA="$STATE/tls/ca.crt" TEST_INGEST_OTHER_CA="$STATE/tls/other-ca.crt"
export TEST_INGEST_POSTGRES_CTL="$STATE/pg-ctl"
export TEST_INGEST_SQLFLUFF="$SQLFLUFF_VENV/bin/sqlfluff"
export TEST_INGEST_CHROMIUM="$(command -v chromium)"
# A Python with boto3 (a dependency of moto): producers in the Kinesis endpoint's tests.
export TEST_INGEST_PYTHON="$VENV/bin/python"
# Dummy credentials for the emulator; no instance metadata look-ups.
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_SESSION_TOKEN=testing
export AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
unset AWS_PROFILE AWS_ENDPOINT_URL

if [ "$SERVE" = 1 ]; then
  log "peers are up; in another shell:"
  echo "export TEST_INGEST_AWS_ENDPOINT=$TEST_INGEST_AWS_ENDPOINT TEST_INGEST_POSTGRES_URL=$TEST_INGEST_POSTGRES_URL TEST_INGEST_POSTGRES_CA=$TEST_INGEST_POSTGRES_CA TEST_INGEST_OTHER_CA=$TEST_INGEST_OTHER_CA TEST_INGEST_POSTGRES_CTL=$TEST_INGEST_POSTGRES_CTL TEST_INGEST_SQLFLUFF=$TEST_INGEST_SQLFLUFF TEST_INGEST_PYTHON=$TEST_INGEST_PYTHON AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true"
  log "press Ctrl-C to stop them"
  # A background sleep and `wait`, so Ctrl-C or SIGTERM runs the cleanup at once.
  while true; do sleep 3600 & wait $!; done
fi

cd "$ROOT"
log "running: $* (peers: $TEST_INGEST_AWS_ENDPOINT, $TEST_INGEST_POSTGRES_URL)"
"$@"
