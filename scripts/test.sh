#!/usr/bin/env bash
# The one command that runs every test against real protocol peers.
#
# Runs `cargo fmt --check`, builds every test and benchmark with clippy's lints as errors
# (clippy-driver as the workspace's rustc wrapper), then `cargo test` for the whole
# workspace with the AWS emulator (moto server) and PostgreSQL started on loopback by
# scripts/peers.sh, which installs them first if they are missing and stops them after;
# then the offline checks of the AWS stack (scripts/infra-check.sh: cfn-lint, checkov, IAM),
# then a bounded run of every fuzz target (scripts/fuzz.sh, FUZZ_SECONDS each, default 20).
#
# Usage: scripts/test.sh [--no-lint] [--no-fuzz] [-- <extra cargo test args>]
#   --no-lint   skip fmt and clippy (quicker local iterations)
#   --no-fuzz   skip the fuzz run (it builds a nightly workspace of its own, ~6 min cold)
#   --serve     start the peers, print their endpoints and wait (for running tests by hand)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LINT=1
FUZZ=1
CARGO_TEST_ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --no-lint) LINT=0 ;;
    --no-fuzz) FUZZ=0 ;;
    --serve) exec bash "$ROOT/scripts/peers.sh" --serve ;;
    --) shift; CARGO_TEST_ARGS=("$@"); break ;;
    *) echo "unknown option: $1 (see the header of $0)" >&2; exit 2 ;;
  esac
  shift
done

cd "$ROOT"
# The debug build of the workspace and its tests takes about 4 GB, the fuzz build 2 GB
# more; a full disk shows up late and obscurely (the linker dies with a bus error).
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
mkdir -p "$TARGET_DIR"
FREE_GB=$(df -Pk "$TARGET_DIR" | awk 'NR == 2 { print int($4 / 1048576) }')
if [ "${FREE_GB:-0}" -lt 12 ]; then
  echo "[test.sh] warning: only ${FREE_GB} GB free under $TARGET_DIR; a cold build, its tests and the fuzz build need about 6 GB" >&2
fi
# The clippy wrapper for the build and the tests, when lints run (see below).
WITH_CLIPPY=()
if [ "$LINT" = 1 ]; then
  echo "[test.sh] cargo fmt --check" >&2
  cargo fmt --all -- --check
  cargo fmt --manifest-path fuzz/Cargo.toml -- --check
  # Clippy lints the workspace's crates while they are built for the tests, instead of
  # in a `cargo clippy` pass of its own: that pass checks every dependency once more
  # (about 6 of a cold run's minutes). It is what `cargo clippy` itself does, with a full
  # build: clippy-driver wraps rustc for the workspace's crates only, and takes the lint
  # flags from CLIPPY_ARGS (arguments ended by __CLIPPY_HACKERY__). The same wrapper is
  # set for `cargo test`, or it would rebuild the workspace's crates, and only for these
  # two commands: the fuzz workspace builds with nightly, which stable's driver is not.
  CLIPPY_DRIVER="$(dirname "$(rustup which rustc 2>/dev/null || command -v rustc)")/clippy-driver"
  if [ -x "$CLIPPY_DRIVER" ]; then
    echo "[test.sh] build with clippy -D warnings (lib, tests, benches)" >&2
    WITH_CLIPPY=(env "RUSTC_WORKSPACE_WRAPPER=$CLIPPY_DRIVER"
      "CLIPPY_ARGS=-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__")
    "${WITH_CLIPPY[@]}" cargo test --workspace --locked --lib --tests --benches --no-run
  else
    echo "[test.sh] cargo clippy -D warnings (no clippy-driver beside rustc)" >&2
    cargo clippy --workspace --all-targets --locked -- -D warnings
  fi
fi
bash "$ROOT/scripts/peers.sh" "${WITH_CLIPPY[@]}" cargo test --workspace --locked "${CARGO_TEST_ARGS[@]}"
bash "$ROOT/scripts/infra-check.sh"
if [ "$FUZZ" = 1 ]; then
  bash "$ROOT/scripts/fuzz.sh" "${FUZZ_SECONDS:-20}"
fi
echo "[test.sh] all tests passed" >&2
