#!/usr/bin/env bash
# Benchmarks microchat scaled out on this machine: auth, CHATS chat instances and BROKERS
# brokers as separate release processes, on fresh databases of the local PostgreSQL and
# the local RabbitMQ (chat instances share live events through it).
#
#   scripts/bench-cluster.sh ws [loadgen ws args]   fan-out with the sockets spread over every broker
#   scripts/bench-cluster.sh idle SOCKETS           hold SOCKETS idle sockets over every broker, with as
#                                                   many loadgen processes as the 20,000-file limit
#                                                   of one process needs; prints the peak and memory
#
# Environment: BROKERS (default 2), CHATS (default 2), HOLD (idle: seconds the sockets are
# held once every loadgen process has opened all of its own, default 90 — longer than the
# brokers' 75 s idle timeout, so unanswered pings would show), PER_PROCESS (idle: sockets
# per loadgen process, default 16000), CARGO_TARGET_DIR. The loadgen processes meet at a
# barrier twice: every user is set up before any socket opens, and every socket is open
# before the hold begins. Ports: brokers 18180.., chats 15152..,
# auth 15151. Every process signs its gRPC calls with its own key from one set of service
# keys made for the run. Everything is stopped and dropped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

scenario="${1:?usage: scripts/bench-cluster.sh ws|idle ...}"
shift
brokers="${BROKERS:-2}" chats="${CHATS:-2}"
target_dir="${CARGO_TARGET_DIR:-target}"
pg="postgres://postgres@127.0.0.1:5432"
amqp="amqp://guest:guest@127.0.0.1:5672/%2f"
tag="bench$$"

cargo build --release -p microchat -p loadgen -p auth -p chat -p broker

pids=() databases=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  for db in "${databases[@]}"; do psql -q "$pg/test" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" || true; done
  if command -v rabbitmqctl >/dev/null; then
    rabbitmqctl -q delete_queue "$tag.events.unrouted" >/dev/null 2>&1 || true
  fi
  rm -rf "$data_dir"
}
data_dir="$(mktemp -d)"
trap cleanup EXIT

for service in auth chat; do
  db="${tag}_$service"; databases+=("$db")
  psql -q "$pg/test" -c "CREATE DATABASE $db"
done

ulimit -n "$(ulimit -Hn)"
# The service keys, made before any process starts (`admin service-keys` of the all-in-one
# binary). One directory for all: one machine, one user; the cluster gives each pod its own.
"$target_dir/release/microchat" admin service-keys "$data_dir/service-keys" >/dev/null
export MICROCHAT_SERVICE_KEYS="$data_dir/service-keys"
export RUST_LOG="${RUST_LOG:-warn}" LOGGER_URL=off AMQP_URL="$amqp" EVENTS_EXCHANGE="$tag.events" \
  CHAT_LIVE_EXCHANGE="$tag.live" BROKER_RATE_LIMIT_API=off BROKER_RATE_LIMIT_AUTH=off \
  BROKER_WS_FRAMES_PER_SECOND=1000 AUTH_ARGON2_MEMORY_KIB=64 AUTH_ARGON2_ITERATIONS=1 \
  AUTH_ACCESS_TOKEN_TTL=2h

MICROCHAT_DATA_DIR="$data_dir/auth" AUTH_LISTEN=127.0.0.1:15151 DATABASE_URL="$pg/${tag}_auth" \
  "$target_dir/release/auth" & pids+=($!)
for ((i = 0; i < chats; i++)); do
  MICROCHAT_DATA_DIR="$data_dir/chat$i" CHAT_LISTEN="127.0.0.1:$((15152 + i))" \
    DATABASE_URL="$pg/${tag}_chat" "$target_dir/release/chat" & pids+=($!)
done
broker_urls=() broker_pids=()
for ((i = 0; i < brokers; i++)); do
  port=$((18180 + i))
  BROKER_LISTEN="127.0.0.1:$port" BROKER_AUTH_URL=http://127.0.0.1:15151 \
    BROKER_CHAT_URL="http://127.0.0.1:$((15152 + i % chats))" BROKER_ID="$tag-broker-$i" \
    "$target_dir/release/broker" & pids+=($!) broker_pids+=($!)
  broker_urls+=("http://127.0.0.1:$port")
done
for url in "${broker_urls[@]}"; do
  deadline=$((SECONDS + 60))
  until curl -fsS -o /dev/null --max-time 2 "$url/readyz" 2>/dev/null; do
    ((SECONDS < deadline)) || { echo "$url was not ready after 60s" >&2; exit 1; }
    sleep 0.2
  done
done
joined_urls="$(IFS=,; echo "${broker_urls[*]}")"
joined_pids="$(IFS=,; echo "${broker_pids[*]}")"
echo "cluster: $brokers broker(s) $joined_urls, $chats chat instance(s), PostgreSQL, RabbitMQ; $(nproc) cores" >&2

sockets_open() {
  local total=0 n
  for url in "${broker_urls[@]}"; do
    n="$(curl -s --max-time 2 "$url/readyz" | sed -nE 's/.*"sockets":([0-9]+).*/\1/p')"
    total=$((total + ${n:-0}))
  done
  echo "$total"
}
rss_kib() {
  local total=0 pid
  for pid in "${broker_pids[@]}"; do total=$((total + $(awk '/VmRSS/ {print $2}' "/proc/$pid/status"))); done
  echo "$total"
}

case "$scenario" in
  ws)
    "$target_dir/release/loadgen" ws --broker "$joined_urls" --server-pid "$joined_pids" "$@"
    ;;
  idle)
    total="${1:?usage: scripts/bench-cluster.sh idle SOCKETS}"
    per_process="${PER_PROCESS:-16000}"
    processes=$(((total + per_process - 1) / per_process))
    base_rss="$(rss_kib)"
    loaders=()
    for ((p = 0; p < processes; p++)); do
      n=$((total / processes + (p < total % processes ? 1 : 0)))
      # Each process its own source addresses: one address has about 28,000 ports.
      sources="127.0.$((p + 1)).1,127.0.$((p + 1)).2"
      "$target_dir/release/loadgen" ws --idle --broker "$joined_urls" --server-pid "$joined_pids" \
        --sockets "$n" --room-size 10 --source "$sources" --settle "${HOLD:-90}s" --setup-concurrency 32 \
        --barrier "$data_dir/barrier" --parties "$processes" \
        > "$data_dir/loadgen$p.out" 2>&1 & loaders+=($!)
    done
    peak=0 peak_rss=0
    while :; do
      running=0
      for pid in "${loaders[@]}"; do kill -0 "$pid" 2>/dev/null && running=$((running + 1)); done
      open="$(sockets_open)"
      if ((open > peak)); then peak=$open peak_rss="$(rss_kib)"; fi
      ((running == 0)) && break
      sleep 2
    done
    failed=0
    for ((p = 0; p < processes; p++)); do
      if wait "${loaders[$p]}"; then
        echo "loadgen $p: $(tail -n 1 "$data_dir/loadgen$p.out")"
      else
        failed=1
        # Its error and causes (before the backtrace).
        echo "loadgen $p FAILED: $(sed -n '/^Error:/,/^Stack backtrace:/p' "$data_dir/loadgen$p.out" | grep -v '^Stack backtrace:' | tr '\n' ' ')"
      fi
    done
    per_socket=$(( (peak_rss - base_rss) * 1024 / (peak > 0 ? peak : 1) ))
    echo "idle cluster: peak $peak authenticated sockets open at once over $brokers brokers;" \
      "brokers' RSS $base_rss -> $peak_rss KiB ($per_socket bytes per socket); $(nproc) cores"
    exit "$failed"
    ;;
  *) echo "unknown scenario $scenario" >&2; exit 2 ;;
esac
