# Start and stop each system under test on loopback, on non-default ports, with its own data
# directory under $PEERS_TMP. Sourced by bench/peers/run (bash). Each start_* sets
# SERVER_PID (the process whose CPU is measured) and returns non-zero if the system did not
# come up in time; each stop_* is safe to call twice.
#
# Durability as configured here (reported in the table):
#   Redis (BullMQ): appendonly yes, appendfsync $REDIS_APPENDFSYNC (default everysec), no RDB
#                   snapshots.
#   RabbitMQ: (the benchmark declares a durable queue, persistent messages, publisher
#             confirms, manual acks); server defaults otherwise.
#   NATS: JetStream file storage under -sd; the server's own periodic sync (2.9.10 has no
#         sync_interval setting).
#   tasq on PostgreSQL: Debian's PostgreSQL with its default settings (fsync and
#         synchronous_commit on), a cluster of its own on loopback; tasq's default durability.

REDIS_PORT=${REDIS_PORT:-26379}
RABBIT_PORT=${RABBIT_PORT:-25672}
RABBIT_DIST_PORT=${RABBIT_DIST_PORT:-25673}
RABBIT_EPMD_PORT=${RABBIT_EPMD_PORT:-24369}
NATS_PORT=${NATS_PORT:-24222}
TASQ_PORT=${TASQ_PORT:-27280}
PG_PORT=${PG_PORT:-27432}
PLAIN_PORT=${PLAIN_PORT:-27390}

RABBIT_SBIN=/usr/lib/rabbitmq/bin

# Waits until 127.0.0.1:$1 accepts connections, at most $2 seconds.
wait_port() {
  local port=$1 secs=${2:-30} i
  for ((i = 0; i < secs * 10; i++)); do
    if (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "port $port did not open within ${secs}s" >&2
  return 1
}

# Waits until process $1 is gone, at most $2 seconds, then SIGKILLs it.
wait_gone() {
  local pid=$1 secs=${2:-20} i
  [ -n "$pid" ] || return 0
  for ((i = 0; i < secs * 10; i++)); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  kill -9 "$pid" 2>/dev/null || true
}

# Stops the daemon whose pid is in the variable named $1 (SIGTERM, SIGKILL after $2 s, default
# 20) and clears that variable; does nothing when it is empty.
stop_daemon() {
  local pid=${!1:-}
  [ -n "$pid" ] || return 0
  kill "$pid" 2>/dev/null || true
  wait_gone "$pid" "${2:-20}"
  printf -v "$1" '%s' ''
}

# ---- Redis (for BullMQ) ----
start_redis() {
  local d=$PEERS_TMP/redis
  mkdir -p "$d"
  redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$d" \
    --appendonly yes --appendfsync "${REDIS_APPENDFSYNC:-everysec}" --save '' \
    --protected-mode yes --daemonize no --logfile "$d/redis.log" &
  REDIS_PID=$!
  SERVER_PID=$REDIS_PID
  wait_port "$REDIS_PORT" 20
}
stop_redis() { stop_daemon REDIS_PID; }

# ---- RabbitMQ ----
rabbit_env() {
  local d=$PEERS_TMP/rabbitmq
  export HOME=$d/home
  export RABBITMQ_NODENAME=tqpeer@localhost
  export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
  export RABBITMQ_NODE_PORT=$RABBIT_PORT
  export RABBITMQ_DIST_PORT=$RABBIT_DIST_PORT
  export RABBITMQ_MNESIA_BASE=$d/mnesia
  export RABBITMQ_LOG_BASE=$d/log
  export RABBITMQ_PID_FILE=$d/rabbit.pid
  export RABBITMQ_ENABLED_PLUGINS_FILE=$d/enabled_plugins
  export RABBITMQ_CONFIG_FILE=$d/rabbitmq
  export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
  export ERL_EPMD_ADDRESS=127.0.0.1
  export ERL_EPMD_PORT=$RABBIT_EPMD_PORT
}
start_rabbitmq() {
  local d=$PEERS_TMP/rabbitmq
  mkdir -p "$d/home" "$d/mnesia" "$d/log"
  echo '[].' >"$d/enabled_plugins"
  cat >"$d/rabbitmq.conf" <<EOF
listeners.tcp.1 = 127.0.0.1:$RABBIT_PORT
loopback_users = none
log.console = false
log.file.level = warning
EOF
  ( rabbit_env; exec "$RABBIT_SBIN/rabbitmq-server" ) >"$d/server.out" 2>&1 &
  RABBIT_WRAPPER_PID=$!
  wait_port "$RABBIT_PORT" 90 || { tail -20 "$d/server.out" >&2; return 1; }
  ( rabbit_env; timeout 60 "$RABBIT_SBIN/rabbitmqctl" -q await_startup --timeout 60 ) || return 1
  SERVER_PID=$(cat "$d/rabbit.pid" 2>/dev/null || true)
  RABBIT_PID=$SERVER_PID
}
stop_rabbitmq() {
  [ -n "${RABBIT_WRAPPER_PID:-}" ] || return 0
  ( rabbit_env; timeout 30 "$RABBIT_SBIN/rabbitmqctl" -q stop ) >/dev/null 2>&1 || true
  wait_gone "${RABBIT_PID:-}" 20
  kill "$RABBIT_WRAPPER_PID" 2>/dev/null || true
  wait_gone "$RABBIT_WRAPPER_PID" 10
  ( rabbit_env; epmd -kill ) >/dev/null 2>&1 || true
  RABBIT_WRAPPER_PID=
  RABBIT_PID=
}

# ---- NATS (JetStream) ----
start_nats() {
  local d=$PEERS_TMP/nats
  mkdir -p "$d"
  nats-server -js -a 127.0.0.1 -p "$NATS_PORT" -sd "$d" -l "$d/nats.log" &
  NATS_PID=$!
  SERVER_PID=$NATS_PID
  wait_port "$NATS_PORT" 20
}
stop_nats() { stop_daemon NATS_PID; }

# ---- tasq ----
start_tasq() {
  local d=$PEERS_TMP/tasq
  mkdir -p "$d"
  "$TASQ_BIN" serve --bind "127.0.0.1:$TASQ_PORT" --data-dir "$d/data" >"$d/tasq.log" 2>&1 &
  TASQ_PID=$!
  SERVER_PID=$TASQ_PID
  wait_port "$TASQ_PORT" 30
}
stop_tasq() { stop_daemon TASQ_PID; }

# ---- tasq on PostgreSQL ----
PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
# Runs a PostgreSQL program as nobody when we are root (PostgreSQL refuses root).
as_pg() { if [ "$(id -u)" = 0 ]; then setpriv --reuid=65534 --regid=65534 --clear-groups "$@"; else "$@"; fi; }
# A cluster of its own for the sitting, started once.
start_postgres() {
  local d=$PEERS_TMP/pg
  if [ ! -d "$d/data" ]; then
    mkdir -p "$d"
    # nobody must reach its directory through $PEERS_TMP (made 0700 by mktemp).
    [ "$(id -u)" = 0 ] && chmod a+x "$PEERS_TMP" && chown -R 65534:65534 "$d"
    as_pg "$PG_BIN/initdb" -D "$d/data" -U postgres -A trust -E UTF8 >"$d/initdb.log" 2>&1 || return 1
  fi
  as_pg "$PG_BIN/pg_ctl" -D "$d/data" -l "$d/postgres.log" -w \
    -o "-p $PG_PORT -k $d -c listen_addresses=127.0.0.1" start >/dev/null || return 1
}
stop_postgres() {
  [ -d "$PEERS_TMP/pg/data" ] && as_pg "$PG_BIN/pg_ctl" -D "$PEERS_TMP/pg/data" -m fast -w stop >/dev/null 2>&1
  return 0
}
# tasq on a fresh database of that cluster.
start_tasq_pg() {
  local d=$PEERS_TMP/tasq db
  mkdir -p "$d"
  db=tasq_$RANDOM$RANDOM
  psql -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -c "CREATE DATABASE $db" postgres || return 1
  TASQ_STORAGE_BACKEND=postgres TASQ_STORAGE_POSTGRES_URL="postgres://postgres@127.0.0.1:$PG_PORT/$db" \
    "$TASQ_BIN" serve --bind "127.0.0.1:$TASQ_PORT" --data-dir "$d/data" >"$d/tasq.log" 2>&1 &
  TASQ_PID=$!
  SERVER_PID=$TASQ_PID
  wait_port "$TASQ_PORT" 30
}

# ---- plain actix-web (wrk baseline) ----
start_plain() {
  "$PLAIN_BIN" "127.0.0.1:$PLAIN_PORT" 2 >"$PEERS_TMP/plain.log" 2>&1 &
  PLAIN_PID=$!
  SERVER_PID=$PLAIN_PID
  wait_port "$PLAIN_PORT" 20
}
stop_plain() { stop_daemon PLAIN_PID 10; }

stop_all() {
  stop_redis; stop_rabbitmq; stop_nats; stop_tasq; stop_postgres; stop_plain
}
