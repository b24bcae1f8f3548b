#!/usr/bin/env bash
# Runs every test: starts NATS, PostgreSQL, Redis and a Docker engine (installing what is
# missing) and the MCP test clients (scripts/mcp-tools.sh), checks formatting and lints,
# then runs all unit, integration and end-to-end tests against them.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

# AXON_WITH_DOCKER=1: the docker adapter's tests run on an engine of the project's own.
AXON_WITH_DOCKER=1 bash scripts/services.sh >/dev/null
# The MCP tests drive the server with the official Python SDK and conformance suite.
bash scripts/mcp-tools.sh >/dev/null
# shellcheck disable=SC1091
source "${AXON_DATA_DIR:-$root/.data}/services.env"

cargo fmt --all --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
# The end-to-end tests run the real `axontask` binary as separate processes.
cargo build --quiet -p axontask
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
else
  cargo test --workspace --no-fail-fast "$@"
fi
