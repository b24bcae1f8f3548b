#!/usr/bin/env bash
# Stops the AxonTask process started by scripts/up.sh (gracefully: SIGTERM, then waits).
# The services (NATS, PostgreSQL, Redis) keep running; their data stays under .data/.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
pidfile=${AXON_DATA_DIR:-$root/.data}/axontask.pid
[ -f "$pidfile" ] || { echo "AxonTask is not running"; exit 0; }
pid=$(cat "$pidfile")
if kill -TERM "$pid" 2>/dev/null; then
  for _ in $(seq 1 250); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
fi
rm -f "$pidfile"
echo "AxonTask stopped"
