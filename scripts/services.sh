#!/usr/bin/env bash
# Starts or stops the local services on free loopback ports:
#   tansu (Kafka-compatible broker, in-memory storage) and moto (S3-compatible server).
# `start` writes $RUN_DIR/services.env (LAKEHOUSE_KAFKA_BROKERS, LAKEHOUSE_TEST_S3_ENDPOINT, ...).
source "$(dirname "$0")/lib.sh"
mkdir -p "$RUN_DIR"
ENV_FILE="$RUN_DIR/services.env"

stop() {
  for f in "$RUN_DIR"/*.pid; do
    [ -f "$f" ] || continue
    kill "$(cat "$f")" 2>/dev/null || true
    rm -f "$f"
  done
  rm -f "$ENV_FILE"
}

start() {
  stop
  local kport sport
  kport=$(free_port); sport=$(free_port)
  log "starting tansu on 127.0.0.1:$kport"
  nohup "$(tansu_bin)" broker --listener-url "tcp://127.0.0.1:$kport" --advertised-listener-url "tcp://127.0.0.1:$kport" \
    --storage-engine memory://tansu/ >"$RUN_DIR/tansu.log" 2>&1 &
  echo $! >"$RUN_DIR/tansu.pid"
  log "starting moto on 127.0.0.1:$sport"
  nohup "$VENV/bin/moto_server" -H 127.0.0.1 -p "$sport" >"$RUN_DIR/moto.log" 2>&1 &
  echo $! >"$RUN_DIR/moto.pid"
  wait_port 127.0.0.1 "$kport" 30
  wait_port 127.0.0.1 "$sport" 30
  cat >"$ENV_FILE" <<ENV
export LAKEHOUSE_KAFKA_BROKERS=127.0.0.1:$kport
export LAKEHOUSE_TEST_S3_ENDPOINT=http://127.0.0.1:$sport
export LAKEHOUSE_TANSU_BIN=$(tansu_bin)
ENV
  echo "$ENV_FILE"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
