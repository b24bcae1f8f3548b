#!/usr/bin/env bash
# Runs the pipeline benchmark (release build) against real NATS, PostgreSQL and Redis on this
# machine and prints its figures, raw service speeds first so the rest reads as ratios.
# `--quick`: a smaller run of every row, about a minute once built.
set -euo pipefail
case "${1:-}" in
  --quick) export BENCH_QUICK=1 ;;
  "") ;;
  *) echo "usage: scripts/bench.sh [--quick]" >&2; exit 2 ;;
esac
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
# A Docker engine too, for the container rows.
AXON_WITH_DOCKER=1 bash scripts/services.sh >/dev/null
# shellcheck disable=SC1091
source "${AXON_DATA_DIR:-$root/.data}/services.env"
# HTTP load comes from wrk, a load tool faster than the server it drives.
command -v wrk >/dev/null || { apt-get install -y -qq wrk >/dev/null || sudo apt-get install -y -qq wrk >/dev/null; }
# The resume-backfill row reads its stream with curl.
command -v curl >/dev/null || { apt-get install -y -qq curl >/dev/null || sudo apt-get install -y -qq curl >/dev/null; }
cargo build --release --quiet -p axontask
cargo bench --quiet -p e2e --bench pipeline
