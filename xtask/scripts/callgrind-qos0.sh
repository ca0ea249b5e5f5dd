#!/usr/bin/env bash
# Instructions per QoS 0 message through the proxy, counted by callgrind
# (repeatable under load, unlike wall-clock or CPU seconds).
#
#   xtask/scripts/callgrind-qos0.sh [N] [OUT_DIR]     # N defaults to 50000
#   QOS=1 xtask/scripts/callgrind-qos0.sh             # the same with QoS 1
#   (publishes and subscription, window 64: the acknowledgements too)
#
# Needs: `cargo build --release -p zilla -p zilla-mqtt-bench`, mosquitto and
# valgrind on PATH. Starts mosquitto on a free port, the proxy
# (tcp -> mqtt server -> mqtt client -> tcp, no JWT, one worker) under
# callgrind, drives N and then N/10 QoS 0 messages (1 -> 1, 64 B) with
# mqtt-bench in two separate proxy runs, stops the proxy with SIGINT and
# prints (Ir(N) - Ir(N/10)) / (N - N/10): the startup and connect costs
# cancel. The callgrind files stay in OUT_DIR (default target/callgrind);
# `callgrind_annotate --inclusive=yes OUT_DIR/big.out | head -60` shows
# where the instructions go.
set -euo pipefail
N=${1:-50000}
OUT=${2:-target/callgrind}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
mkdir -p "$OUT"
ZILLA=${ZILLA:-target/release/zilla}   # another build: ZILLA=/path/to/zilla
BENCH=target/release/mqtt-bench

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 600); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; return 1; }

BROKER=$(free_port)
printf 'listener %s 127.0.0.1\nallow_anonymous true\n' "$BROKER" > "$OUT/mosquitto.conf"
mosquitto -c "$OUT/mosquitto.conf" > "$OUT/mosquitto.log" 2>&1 &
MOSQ=$!
trap 'kill $MOSQ 2>/dev/null || true' EXIT
wait_port "$BROKER"

# $1: messages, $2: name of the callgrind file; prints its total Ir
run() {
  local port; port=$(free_port)
  cat > "$OUT/proxy.yaml" <<YAML
name: callgrind
bindings:
  north_tcp_server:
    type: tcp
    kind: server
    options: {host: 127.0.0.1, port: $port}
    exit: north_mqtt_server
  north_mqtt_server:
    type: mqtt
    kind: server
    exit: north_mqtt_client
  north_mqtt_client:
    type: mqtt
    kind: client
    exit: south_tcp_client
  south_tcp_client:
    type: tcp
    kind: client
    options: {host: 127.0.0.1, port: $BROKER}
YAML
  valgrind --tool=callgrind --callgrind-out-file="$OUT/$2.out" \
    "$ZILLA" start -w 1 -c "$OUT/proxy.yaml" > "$OUT/$2.log" 2>&1 &
  local pid=$!
  wait_port "$port"
  "$BENCH" throughput --port "$port" --qos "${QOS:-0}" --size 64 --messages "$1" >&2
  kill -INT $pid
  wait $pid || true
  awk '/^(summary|totals):/ {print $2; exit}' "$OUT/$2.out"
}

BIG=$(run "$N" big)
SMALL=$(run $((N / 10)) small)
echo "Ir: N=$N $BIG, N=$((N / 10)) $SMALL"
echo "instructions per message: $(( (BIG - SMALL) / (N - N / 10) ))"
