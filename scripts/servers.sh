#!/usr/bin/env bash
# Real servers for integration tests, on loopback only, all state under one directory:
#   RabbitMQ (Debian's rabbitmq-server), an S3-compatible server (s3s-fs) and a
#   MongoDB wire-protocol server (nx-27017, backed by SQLite).
#
#   scripts/servers.sh install [DIR [SERVICE...]]  install what is missing (apt, cargo, pip)
#   scripts/servers.sh start   [DIR [SERVICE...]]  start them; prints `export` lines for tests
#   scripts/servers.sh stop    [DIR]               stop everything started from DIR
#
# SERVICE is s3, rabbitmq or mongo (default: all three).
#
# Ports (override with the variables): ESR_AMQP_PORT 25672, ESR_RABBIT_DIST_PORT (Erlang
# distribution) AMQP + 1, ESR_S3_PORT 29000, ESR_MONGO_PORT 27717.
set -euo pipefail

DIR="${2:-${ESR_SERVERS_DIR:-/tmp/esr-ingest-servers}}"
SERVICES="${*:3}"
SERVICES="${SERVICES:-s3 rabbitmq mongo}"
wants() { case " $SERVICES " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
# Every port sits below the kernel's ephemeral range (32768+), so no outgoing connection
# of another process can hold it when a server starts or restarts.
AMQP_PORT="${ESR_AMQP_PORT:-25672}"
DIST_PORT="${ESR_RABBIT_DIST_PORT:-$((AMQP_PORT + 1))}"
S3_PORT="${ESR_S3_PORT:-29000}"
MONGO_PORT="${ESR_MONGO_PORT:-27717}"
S3_KEY="esr-test-key"
S3_SECRET="esr-test-secret"
TOOLS="${ESR_TOOLS_DIR:-$HOME/.cache/esr-ingest-tools}"
NODE="${ESR_RABBIT_NODE:-esrtest}@localhost"
RABBIT_BIN=/usr/lib/rabbitmq/bin

log() { printf '[servers] %s\n' "$*" >&2; }

install() {
  if wants rabbitmq && [ ! -x "$RABBIT_BIN/rabbitmq-server" ]; then
    log "installing rabbitmq-server (apt)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server >/dev/null
  fi
  if wants s3 && [ ! -x "$TOOLS/bin/s3s-fs" ]; then
    log "installing s3s-fs (cargo)"
    cargo install s3s-fs@0.14.1 --locked --features binary --root "$TOOLS" -q
  fi
  if wants mongo && ! command -v nx-27017 >/dev/null 2>&1; then
    log "installing nx-27017 (pip)"
    python3 -m pip install -q nx-27017
  fi
}

wait_port() { # port, what
  for _ in $(seq 1 200); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  log "$2 did not open port $1"; return 1
}

rabbit_env() {
  export HOME="$DIR/rabbit"
  export RABBITMQ_NODENAME="$NODE" RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 RABBITMQ_NODE_PORT="$AMQP_PORT"
  export RABBITMQ_DIST_PORT="$DIST_PORT" ERL_EPMD_ADDRESS=127.0.0.1
  export RABBITMQ_MNESIA_BASE="$DIR/rabbit/mnesia" RABBITMQ_LOG_BASE="$DIR/rabbit/log"
  export RABBITMQ_PID_FILE="$DIR/rabbit/rabbit.pid" RABBITMQ_CONFIG_FILE="$DIR/rabbit/rabbitmq"
  export RABBITMQ_ENABLED_PLUGINS_FILE="$DIR/rabbit/enabled_plugins" RABBITMQ_CONF_ENV_FILE="$DIR/rabbit/env.conf"
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

start() {
  install
  mkdir -p "$DIR"
  for pair in "rabbitmq:$AMQP_PORT" "rabbitmq:$DIST_PORT" "s3:$S3_PORT" "mongo:$MONGO_PORT"; do
    if wants "${pair%%:*}" && port_in_use "${pair#*:}"; then
      log "port ${pair#*:} (${pair%%:*}) is already in use: stop what runs there, or choose other ports (ESR_AMQP_PORT, ESR_RABBIT_DIST_PORT, ESR_S3_PORT, ESR_MONGO_PORT)"
      exit 1
    fi
  done
  if wants rabbitmq; then
    mkdir -p "$DIR/rabbit/mnesia" "$DIR/rabbit/log"
    (
      rabbit_env
      : > "$RABBITMQ_CONF_ENV_FILE"
      echo "[]." > "$RABBITMQ_ENABLED_PLUGINS_FILE"
      printf 'loopback_users = none\nlisteners.tcp.default = 127.0.0.1:%s\n' "$AMQP_PORT" > "$RABBITMQ_CONFIG_FILE.conf"
      log "starting RabbitMQ on 127.0.0.1:$AMQP_PORT"
      nohup "$RABBIT_BIN/rabbitmq-server" > "$DIR/rabbit/stdout.log" 2>&1 &
      "$RABBIT_BIN/rabbitmqctl" -n "$NODE" wait "$RABBITMQ_PID_FILE" --timeout 120 >/dev/null
    )
    echo "export ESR_TEST_AMQP_URL=amqp://guest:guest@127.0.0.1:$AMQP_PORT/%2f"
    echo "export ESR_TEST_RABBITMQCTL=\"$RABBIT_BIN/rabbitmqctl -n $NODE\" ESR_TEST_RABBIT_HOME=$DIR/rabbit"
  fi
  if wants s3; then
    mkdir -p "$DIR/s3"
    log "starting s3s-fs on 127.0.0.1:$S3_PORT"
    nohup "$TOOLS/bin/s3s-fs" --host 127.0.0.1 --port "$S3_PORT" --access-key "$S3_KEY" --secret-key "$S3_SECRET" \
      "$DIR/s3" > "$DIR/s3.log" 2>&1 &
    echo $! > "$DIR/s3.pid"
    wait_port "$S3_PORT" s3s-fs
    echo "export ESR_TEST_S3_ENDPOINT=http://127.0.0.1:$S3_PORT"
    echo "export AWS_ACCESS_KEY_ID=$S3_KEY AWS_SECRET_ACCESS_KEY=$S3_SECRET AWS_REGION=us-east-1"
  fi
  if wants mongo; then
    mkdir -p "$DIR/mongo"
    log "starting nx-27017 on 127.0.0.1:$MONGO_PORT"
    nx-27017 -d --host 127.0.0.1 -p "$MONGO_PORT" --data-dir "$DIR/mongo" --log-file "$DIR/mongo.log" \
      --pid-file "$DIR/mongo.pid" >/dev/null
    wait_port "$MONGO_PORT" nx-27017
    echo "export ESR_TEST_MONGO_URI=mongodb://127.0.0.1:$MONGO_PORT"
  fi
}

stop() {
  if [ -f "$DIR/rabbit/rabbit.pid" ]; then
    log "stopping RabbitMQ"
    ( rabbit_env; "$RABBIT_BIN/rabbitmqctl" -n "$NODE" shutdown >/dev/null 2>&1 || true )
  fi
  if [ -f "$DIR/s3.pid" ]; then
    log "stopping s3s-fs"; kill "$(cat "$DIR/s3.pid")" 2>/dev/null || true; rm -f "$DIR/s3.pid"
  fi
  if [ -f "$DIR/mongo.pid" ]; then
    log "stopping nx-27017"; nx-27017 --stop --pid-file "$DIR/mongo.pid" >/dev/null 2>&1 || true
  fi
  if ! pgrep -f 'beam.*rabbit' >/dev/null 2>&1; then epmd -kill >/dev/null 2>&1 || true; fi
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 install|start [DIR]|stop [DIR]" >&2; exit 2 ;;
esac
