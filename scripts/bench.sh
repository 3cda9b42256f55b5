#!/usr/bin/env bash
# The load benchmark: the processor's load of a generated CSV (default 1 GiB) next to raw
# COPY FROM STDIN of the same file into the same PostgreSQL, with peak memory. Starts the
# peers like the tests do (scripts/peers.sh) and builds in the release profile.
#
# Usage: scripts/bench.sh [--size-mb N] [--store s3|local] [--dir PATH]
#   --size-mb N   size of the generated file (default 1024); cached in --dir between runs
#   --store       read the file from the emulator's S3 (default) or a local folder
#   --dir PATH    where the generated file lives (default: the system temp folder)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
exec bash scripts/peers.sh cargo bench --locked -p processor --bench load -- "$@"
