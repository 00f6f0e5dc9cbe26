#!/usr/bin/env bash
# Make sure the local services the integration tests talk to are up:
#   postgres  127.0.0.1:5432, user postgres (trust), database `test`
#   redis     127.0.0.1:6379
#   rabbitmq  127.0.0.1:5672 (guest/guest)
#
# Usage: scripts/ensure-services.sh [postgres] [redis] [rabbitmq]   (default: all three)
#
# For each service: if it answers, say so; else if installed, start it and wait;
# else (as root) apt-get install it, start it and wait. Exits 1 with a clear
# message if a service still cannot be reached. Idempotent.
#
# Environment: ENSURE_SERVICES_TIMEOUT (seconds to wait per service, default 60),
#              ENSURE_SERVICES_PG_DB (database to ensure, default test).
set -euo pipefail

TIMEOUT="${ENSURE_SERVICES_TIMEOUT:-60}"
HOST=127.0.0.1
PG_PORT=5432
REDIS_PORT=6379
AMQP_PORT=5672
PG_DB="${ENSURE_SERVICES_PG_DB:-test}"

APT_UPDATED=0
PG_FRESH=0 # set when this script installed PostgreSQL or created its cluster

log() { printf 'ensure-services: %s\n' "$*"; }
die() { printf 'ensure-services: ERROR: %s\n' "$*" >&2; exit 1; }
have() { command -v "$1" >/dev/null 2>&1; }
is_root() { [ "$(id -u)" -eq 0 ]; }

# wait_for NAME CHECK_FUNCTION: poll CHECK_FUNCTION once a second, up to $TIMEOUT s.
wait_for() {
    local name=$1 check=$2 waited=0
    until "$check"; do
        if [ "$waited" -ge "$TIMEOUT" ]; then
            return 1
        fi
        sleep 1
        waited=$((waited + 1))
    done
    log "$name is up (after ${waited}s)"
}

apt_install() {
    is_root || die "$1 is not installed and we are not root; install it (apt-get install $*) and retry"
    have apt-get || die "$1 is not installed and apt-get is not available"
    export DEBIAN_FRONTEND=noninteractive
    if [ "$APT_UPDATED" -eq 0 ]; then
        log "apt-get update"
        apt-get update -qq >/dev/null || die "apt-get update failed"
        APT_UPDATED=1
    fi
    log "apt-get install -y $*"
    apt-get install -y -qq "$@" >/dev/null || die "apt-get install $* failed"
}

tcp_open() { timeout 2 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null; }

# --------------------------------------------------------------------------- PostgreSQL

pg_answers() { have pg_isready && pg_isready -q -h "$HOST" -p "$PG_PORT" -t 2; }

pg_version() { ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1; }

pg_installed() { [ -n "$(ls /usr/lib/postgresql/*/bin/postgres 2>/dev/null)" ]; }

pg_trust_loopback() {
    # Fresh Debian clusters ask for a password over TCP; the tests connect as
    # postgres with none. Only touches a cluster this script installed or created.
    local hba="/etc/postgresql/$1/main/pg_hba.conf"
    [ -f "$hba" ] || return 0
    grep -q 'ensure-services' "$hba" && return 0
    log "allowing trust auth on loopback in $hba"
    local tmp
    tmp=$(mktemp)
    {
        echo '# added by slatimer scripts/ensure-services.sh'
        echo 'local all all trust'
        echo 'host all all 127.0.0.1/32 trust'
        echo 'host all all ::1/128 trust'
        cat "$hba"
    } >"$tmp"
    cat "$tmp" >"$hba"
    rm -f "$tmp"
}

pg_start() {
    local ver
    ver=$(pg_version)
    if [ -z "$ver" ] || [ ! -d "/etc/postgresql/$ver/main" ]; then
        ver=$(ls /usr/lib/postgresql 2>/dev/null | sort -V | tail -n 1)
        [ -n "$ver" ] || die "postgresql: no server binaries found under /usr/lib/postgresql"
        is_root || die "postgresql: no cluster exists and we are not root to create one"
        log "postgresql: creating cluster $ver/main"
        pg_createcluster "$ver" main >/dev/null || die "postgresql: pg_createcluster $ver main failed"
        PG_FRESH=1
    fi
    if [ "$PG_FRESH" -eq 1 ]; then
        pg_trust_loopback "$ver"
    fi
    log "postgresql: starting cluster $ver/main"
    pg_ctlcluster --skip-systemctl-redirect "$ver" main start \
        || pg_answers \
        || die "postgresql: pg_ctlcluster $ver main start failed (see /var/log/postgresql/)"
}

pg_can_login() { psql -w -h "$HOST" -p "$PG_PORT" -U postgres -d postgres -Atqc 'select 1' >/dev/null 2>&1; }

pg_db_exists() {
    [ "$(psql -w -h "$HOST" -p "$PG_PORT" -U postgres -d postgres -Atqc \
        "select 1 from pg_database where datname = '$PG_DB'" 2>/dev/null)" = 1 ]
}

ensure_postgres() {
    if pg_answers; then
        :
    else
        if ! pg_installed; then
            apt_install postgresql
            PG_FRESH=1
        fi
        pg_start
        wait_for postgresql pg_answers \
            || die "postgresql does not answer on $HOST:$PG_PORT after ${TIMEOUT}s (see /var/log/postgresql/)"
    fi
    if ! pg_can_login; then
        die "postgresql answers on $HOST:$PG_PORT but user postgres cannot log in without a password" \
            "(pg_hba.conf needs 'host all all 127.0.0.1/32 trust')"
    fi
    if ! pg_db_exists; then
        log "postgresql: creating database $PG_DB"
        createdb -w -h "$HOST" -p "$PG_PORT" -U postgres "$PG_DB" || pg_db_exists \
            || die "postgresql: createdb $PG_DB failed"
    fi
    psql -w -h "$HOST" -p "$PG_PORT" -U postgres -d "$PG_DB" -Atqc 'select 1' >/dev/null 2>&1 \
        || die "postgresql: cannot connect to database $PG_DB as postgres on $HOST:$PG_PORT"
    log "postgresql up ($HOST:$PG_PORT, database $PG_DB)"
}

# --------------------------------------------------------------------------- Redis

redis_answers() {
    if have redis-cli; then
        [ "$(timeout 3 redis-cli -h "$HOST" -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ]
    else
        tcp_open "$HOST" "$REDIS_PORT"
    fi
}

redis_start() {
    mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
    log "redis: starting redis-server"
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$REDIS_PORT" --save "" \
        --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log >/dev/null \
        || die "redis: redis-server failed to start (see /var/log/redis/ci.log)"
}

ensure_redis() {
    if redis_answers; then
        log "redis up ($HOST:$REDIS_PORT)"
        return 0
    fi
    if ! have redis-server; then
        apt_install redis-server
    fi
    redis_start
    wait_for redis redis_answers \
        || die "redis does not answer on $HOST:$REDIS_PORT after ${TIMEOUT}s (see /var/log/redis/ci.log)"
}

# --------------------------------------------------------------------------- RabbitMQ

rabbit_answers() { tcp_open "$HOST" "$AMQP_PORT"; }

rabbit_configure_fresh() {
    # Keep the node on loopback with a name that resolves in a sandbox
    # (same settings as the machine image uses).
    local env=/etc/rabbitmq/rabbitmq-env.conf
    mkdir -p /etc/rabbitmq
    if ! grep -q '^NODENAME=' "$env" 2>/dev/null; then
        {
            echo 'NODENAME=rabbit@localhost'
            echo 'ERL_EPMD_ADDRESS=127.0.0.1'
            echo 'export ERL_FLAGS="-kernel inet_dist_use_interface {127,0,0,1}"'
        } >>"$env"
    fi
}

ensure_rabbitmq() {
    if rabbit_answers; then
        log "rabbitmq up ($HOST:$AMQP_PORT)"
        return 0
    fi
    if ! have rabbitmq-server; then
        apt_install rabbitmq-server
        rabbit_configure_fresh
    fi
    log "rabbitmq: starting rabbitmq-server"
    rabbitmq-server -detached >/dev/null 2>&1 \
        || die "rabbitmq: rabbitmq-server -detached failed (see /var/log/rabbitmq/)"
    wait_for rabbitmq rabbit_answers \
        || die "rabbitmq does not answer on $HOST:$AMQP_PORT after ${TIMEOUT}s (see /var/log/rabbitmq/)"
}

# --------------------------------------------------------------------------- main

services=("$@")
if [ "${#services[@]}" -eq 0 ]; then
    services=(postgres redis rabbitmq)
fi

for svc in "${services[@]}"; do
    case "$svc" in
        postgres | postgresql | pg) ensure_postgres ;;
        redis) ensure_redis ;;
        rabbitmq | rabbit | amqp) ensure_rabbitmq ;;
        *) die "unknown service '$svc' (expected: postgres, redis, rabbitmq)" ;;
    esac
done
