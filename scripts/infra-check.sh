#!/usr/bin/env bash
# Checks the AWS stack offline: cfn-lint and checkov on infra/template.yaml, checkov on the
# Dockerfile, and the IAM least-privilege tests (infra/tests). Installs the pinned tools
# into a virtual environment under ~/.cache on first use. Run by scripts/test.sh.
#
# Usage: scripts/infra-check.sh
set -euo pipefail

CFN_LINT_VERSION="1.58.0"
CHECKOV_VERSION="3.3.30"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE_DIR="${TEST_INGEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/redshift-ingest}"
VENV="$CACHE_DIR/infra-tools-cfnlint$CFN_LINT_VERSION-checkov$CHECKOV_VERSION"

log() { printf '[infra-check.sh] %s\n' "$*" >&2; }

if [ ! -x "$VENV/bin/checkov" ] || [ ! -x "$VENV/bin/cfn-lint" ]; then
  command -v python3 >/dev/null 2>&1 || { log "python3 is required (scripts/peers.sh installs it)"; exit 1; }
  log "installing cfn-lint==$CFN_LINT_VERSION and checkov==$CHECKOV_VERSION into $VENV"
  rm -rf "$VENV"
  mkdir -p "$CACHE_DIR"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check \
    "cfn-lint==$CFN_LINT_VERSION" "checkov==$CHECKOV_VERSION"
fi

cd "$ROOT"
log "cfn-lint infra/template.yaml"
"$VENV/bin/cfn-lint" infra/template.yaml
# --skip-download: no calls to the vendor's platform; suppressions are `checkov:skip`
# comments beside the resources, each with its reason.
log "checkov infra/template.yaml"
"$VENV/bin/checkov" --quiet --compact --skip-download --framework cloudformation -f infra/template.yaml
log "checkov Dockerfile"
"$VENV/bin/checkov" --quiet --compact --skip-download --framework dockerfile -f Dockerfile
log "IAM least-privilege tests"
"$VENV/bin/python" -m unittest discover -s infra/tests
log "infra checks passed"
