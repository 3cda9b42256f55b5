#!/usr/bin/env bash
# Runs the fuzz targets in fuzz/ (cargo-fuzz, libFuzzer) for a bounded time each.
#
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
#   SECONDS_PER_TARGET  default 20 (what the test command runs); use 600+ for real hunts
#   TARGET              work_item, stream_record, s3_key (default: all)
# Environment:
#   FUZZ_SANITIZER      none (default: panics and hangs are what safe Rust can hit) or
#                       address (AddressSanitizer over the whole build; slower)
#
# Installs cargo-fuzz from crates.io if missing; needs the nightly toolchain. Inputs that
# crash are saved under fuzz/artifacts/TARGET/ and the script fails; new interesting
# inputs go to a scratch corpus (FUZZ_CORPUS_DIR, default ~/.cache/redshift-ingest/fuzz),
# the checked-in seeds stay as they are.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SECONDS_PER_TARGET="${1:-20}"
shift || true
TARGETS=("$@")
if [ ${#TARGETS[@]} -eq 0 ]; then TARGETS=(work_item stream_record s3_key); fi
SANITIZER="${FUZZ_SANITIZER:-none}"
CORPUS_ROOT="${FUZZ_CORPUS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/redshift-ingest/fuzz}"
CARGO_FUZZ_VERSION="0.13.2"

log() { printf '[fuzz.sh] %s\n' "$*" >&2; }

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  log "installing the nightly toolchain (cargo-fuzz needs it)"
  rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  log "installing cargo-fuzz $CARGO_FUZZ_VERSION from crates.io"
  cargo install --locked --quiet cargo-fuzz --version "$CARGO_FUZZ_VERSION"
fi

# Seeds checked in with the project: the envelope's fixtures, the bad-record corpus.
seeds_of() {
  case "$1" in
    work_item) echo "$ROOT/fuzz/seeds/work_item $ROOT/shared/tests/fixtures/work_items/valid $ROOT/shared/tests/fixtures/work_items/invalid" ;;
    stream_record) echo "$ROOT/fuzz/seeds/stream_record $ROOT/testdata/bad-records" ;;
    *) echo "$ROOT/fuzz/seeds/$1" ;;
  esac
}

# A stable clippy-driver as the workspace's rustc wrapper (scripts/test.sh sets one for its
# own build) cannot build with nightly.
unset RUSTC_WORKSPACE_WRAPPER CLIPPY_ARGS
cd "$ROOT/fuzz"
LOG_DIR="$(mktemp -d)"
trap 'rm -rf "$LOG_DIR"' EXIT
log "building the targets (sanitizer: $SANITIZER)"
if ! cargo +nightly fuzz build --sanitizer "$SANITIZER" >"$LOG_DIR/build.log" 2>&1; then
  tail -n 40 "$LOG_DIR/build.log" >&2
  log "build failed"
  exit 1
fi
for target in "${TARGETS[@]}"; do
  corpus="$CORPUS_ROOT/$target"
  mkdir -p "$corpus"
  log "$target: ${SECONDS_PER_TARGET}s"
  # shellcheck disable=SC2046
  if cargo +nightly fuzz run --sanitizer "$SANITIZER" "$target" "$corpus" $(seeds_of "$target") -- \
    -max_total_time="$SECONDS_PER_TARGET" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
    -print_final_stats=1 >"$LOG_DIR/$target.log" 2>&1; then
    grep -E '^stat::(number_of_executed_units|new_units_added)|^#[0-9]+[[:space:]]+DONE' "$LOG_DIR/$target.log" | sed "s/^/[fuzz.sh] $target /" >&2 || true
  else
    grep -v '^INFO' "$LOG_DIR/$target.log" | tail -n 60 >&2
    log "$target found a failing input (saved under fuzz/artifacts/$target/)"
    exit 1
  fi
done
log "no failing input in ${TARGETS[*]}"
