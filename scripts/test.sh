#!/usr/bin/env bash
# The one command that runs every test against real protocol peers.
#
# Runs `cargo fmt --check` and `cargo clippy -D warnings`, then `cargo test` for the whole
# workspace with the AWS emulator (moto server) and PostgreSQL started on loopback by
# scripts/peers.sh, which installs them first if they are missing and stops them after;
# then the offline checks of the AWS stack (scripts/infra-check.sh: cfn-lint, checkov, IAM).
#
# Usage: scripts/test.sh [--no-lint] [-- <extra cargo test args>]
#   --no-lint   skip fmt and clippy (quicker local iterations)
#   --serve     start the peers, print their endpoints and wait (for running tests by hand)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LINT=1
CARGO_TEST_ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --no-lint) LINT=0 ;;
    --serve) exec bash "$ROOT/scripts/peers.sh" --serve ;;
    --) shift; CARGO_TEST_ARGS=("$@"); break ;;
    *) echo "unknown option: $1 (see the header of $0)" >&2; exit 2 ;;
  esac
  shift
done

cd "$ROOT"
if [ "$LINT" = 1 ]; then
  echo "[test.sh] cargo fmt --check" >&2
  cargo fmt --all -- --check
  echo "[test.sh] cargo clippy -D warnings" >&2
  cargo clippy --workspace --all-targets --locked -- -D warnings
fi
bash "$ROOT/scripts/peers.sh" cargo test --workspace --locked "${CARGO_TEST_ARGS[@]}"
bash "$ROOT/scripts/infra-check.sh"
echo "[test.sh] all tests passed" >&2
