#!/usr/bin/env bash
# The benchmarks that need the peers. Starts them like the tests do (scripts/peers.sh)
# and builds in the release profile.
#
# Usage: scripts/bench.sh [load] [--size-mb N] [--store s3|local] [--dir PATH]
#   the load benchmark: a generated CSV (default 1 GiB) loaded by the processor next to
#   raw COPY FROM STDIN of the same file into the same PostgreSQL, with peak memory.
#   --size-mb N   size of the generated file (default 1024); cached in --dir between runs
#   --store       read the file from the emulator's S3 (default) or a local folder
#   --dir PATH    where the generated file lives (default: the system temp folder)
#
# Usage: scripts/bench.sh redshift [--size-mb N] [--datasets N]
#   the same file through the Redshift sink on the Redshift stand-in, next to raw COPY and
#   the PostgreSQL sink, with peak memory; then N datasets (default 2) loading it at once.
#
# Usage: scripts/bench.sh latency [--records N] [--rate R]
#   the stream path's end-to-end latency, PutRecords to rows visible in PostgreSQL, next
#   to the emulator's own put-to-read latency (default 12,000 records at 1,000/s).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bench=load
case "${1:-}" in
  load) shift ;;
  latency) bench=stream_latency; shift ;;
  redshift) shift; set -- --sink redshift "$@" ;;
esac
exec bash scripts/peers.sh cargo bench --locked -p processor --bench "$bench" -- "$@"
