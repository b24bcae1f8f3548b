#!/usr/bin/env bash
# Starts the whole system on this machine: NATS JetStream, PostgreSQL and Redis (installed
# if missing), then `axontask serve --roles all` in the background. Prints the base URL and
# a fresh API key. Safe to run again: it reuses running services and restarts AxonTask.
# Stop AxonTask with scripts/down.sh.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
data=${AXON_DATA_DIR:-$root/.data}

bash scripts/services.sh >/dev/null
# shellcheck disable=SC1091
source "$data/services.env"

export API_HOST=${API_HOST:-127.0.0.1}
export API_PORT=${API_PORT:-8080}
# AXON_WITH_DOCKER=1 (read by services.sh too) starts a Docker engine of the project's own
# and enables the docker adapter.
if [ "${AXON_WITH_DOCKER:-0}" = 1 ]; then
  export ADAPTERS_ENABLED=${ADAPTERS_ENABLED:-mock,shell,docker}
else
  export ADAPTERS_ENABLED=${ADAPTERS_ENABLED:-mock,shell}
fi

echo "[up] building axontask (release; the first build takes a few minutes)" >&2
cargo build --release --quiet -p axontask
bin=$root/target/release/axontask

bash scripts/down.sh >/dev/null 2>&1 || true
"$bin" migrate >/dev/null
setsid "$bin" serve --roles all </dev/null >"$data/axontask.log" 2>&1 &
echo $! >"$data/axontask.pid"

base="http://$API_HOST:$API_PORT"
for _ in $(seq 1 100); do
  curl -fsS "$base/readyz" >/dev/null 2>&1 && break
  if ! kill -0 "$(cat "$data/axontask.pid")" 2>/dev/null; then
    echo "[up] axontask exited; its log:" >&2; tail -n 20 "$data/axontask.log" >&2; exit 1
  fi
  sleep 0.1
done
curl -fsS "$base/readyz" >/dev/null || { echo "[up] axontask is not ready; see $data/axontask.log" >&2; exit 1; }
key=$("$bin" keys create --tenant "${AXON_TENANT:-demo}" | tail -n 1)

cat <<MSG
AxonTask is running (roles: command-api, query-api, worker, projector, mcp, webhooks; adapters: $ADAPTERS_ENABLED).
  base URL:  $base
  MCP:       $base/mcp  (send the key as the X-Api-Key header; see the README's MCP section)
  API key:   $key
  log:       $data/axontask.log
  stop:      scripts/down.sh
  audit:     $bin verify --api $base --key $key --task TASK_ID  (docs/audit.md)

Try it:
  export AXON=$base KEY=$key
  curl -s -X POST \$AXON/mcp/start_task -H "X-Api-Key: \$KEY" -H 'content-type: application/json' \\
       -d '{"name":"hello","adapter":"shell","args":{"command":"for i in 1 2 3; do echo \$i; sleep 1; done"}}'
MSG
