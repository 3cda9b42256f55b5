#!/usr/bin/env bash
# The one command that runs every test against real protocol peers.
#
# On a fresh Debian machine with Rust it installs what is missing (moto server from PyPI
# into a virtual environment under ~/.cache, PostgreSQL from Debian packages), starts both
# on free 127.0.0.1 ports with throwaway state, exports their endpoints to the tests, runs
# `cargo fmt --check`, `cargo clippy -D warnings` and `cargo test`, and stops the servers on
# exit, also on failure.
#
# Usage: scripts/test.sh [--no-lint] [-- <extra cargo test args>]
#   --no-lint   skip fmt and clippy (quicker local iterations)
#   --serve     start the peers, print their endpoints and wait (for running tests by hand)
set -euo pipefail

MOTO_VERSION="5.2.5"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE_DIR="${TEST_INGEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/redshift-ingest}"
VENV="$CACHE_DIR/moto-$MOTO_VERSION"
LINT=1
SERVE=0
CARGO_TEST_ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --no-lint) LINT=0 ;;
    --serve) SERVE=1 ;;
    --) shift; CARGO_TEST_ARGS=("$@"); break ;;
    *) echo "unknown option: $1 (see the header of $0)" >&2; exit 2 ;;
  esac
  shift
done

log() { printf '[test.sh] %s\n' "$*" >&2; }
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

start_postgres() {
  PG_PORT="$(free_port)"
  mkdir -p "$STATE/pg"
  if [ "$(id -u)" = 0 ]; then chown postgres "$STATE" "$STATE/pg"; chmod 755 "$STATE"; fi
  pg_run "'$PG_BIN/initdb' -D '$STATE/pg/data' -U postgres --auth=trust -E UTF8 --no-locale --no-sync" >"$STATE/initdb.log" 2>&1 \
    || { cat "$STATE/initdb.log" >&2; die "initdb failed"; }
  pg_run "'$PG_BIN/pg_ctl' -D '$STATE/pg/data' -l '$STATE/pg/log' -w -t 60 -o \"-c listen_addresses=127.0.0.1 -p $PG_PORT -k '$STATE/pg' -c fsync=off -c max_connections=200\" start" >/dev/null
  PG_STARTED=1
  log "PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$PG_PORT"
}

ensure_python
ensure_moto
ensure_postgres
start_moto
start_postgres

export TEST_INGEST_AWS_ENDPOINT="http://127.0.0.1:$MOTO_PORT"
export TEST_INGEST_POSTGRES_URL="postgres://postgres@127.0.0.1:$PG_PORT/postgres"
# Dummy credentials for the emulator; no instance metadata look-ups.
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_SESSION_TOKEN=testing
export AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
unset AWS_PROFILE AWS_ENDPOINT_URL

if [ "$SERVE" = 1 ]; then
  log "peers are up; in another shell:"
  echo "export TEST_INGEST_AWS_ENDPOINT=$TEST_INGEST_AWS_ENDPOINT TEST_INGEST_POSTGRES_URL=$TEST_INGEST_POSTGRES_URL AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true"
  log "press Ctrl-C to stop them"
  while true; do sleep 3600; done
fi

cd "$ROOT"
if [ "$LINT" = 1 ]; then
  log "cargo fmt --check"
  cargo fmt --all -- --check
  log "cargo clippy -D warnings"
  cargo clippy --workspace --all-targets --locked -- -D warnings
fi
log "cargo test (peers: $TEST_INGEST_AWS_ENDPOINT, $TEST_INGEST_POSTGRES_URL)"
cargo test --workspace --locked "${CARGO_TEST_ARGS[@]}"
log "all tests passed"
