#!/usr/bin/env bash
# The whole test suite: installs what the tests need (Debian 12, root), starts
# the services they use, then runs fmt, clippy and every test of the workspace.
# Usage: scripts/test.sh            (from anywhere inside the repository)
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n==> %s\n' "$*"; }

if [ "$(id -u)" != 0 ]; then
  echo "error: the tests need root (namespaces, overlayfs, dockerd)" >&2
  exit 1
fi

log "installing test dependencies and starting services"
bash scripts/services.sh deps
bash scripts/services.sh all

if [ ! -d ../shared/conformance ] && [ -z "${STOWAGE_CONFORMANCE:-}" ]; then
  echo "error: ../shared/conformance is missing (set STOWAGE_CONFORMANCE to its path)" >&2
  exit 1
fi

log "cargo fmt --check"
cargo fmt --all -- --check

log "cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

log "cargo test"
cargo test --workspace --no-fail-fast

log "lint agreement with hadolint (fails below 95%)"
python3 tests-data/lint/hadolint_agreement.py "${CARGO_TARGET_DIR:-target}/debug/stowage" >/dev/null
