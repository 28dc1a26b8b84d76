#!/usr/bin/env bash
# Benchmarks the auth check: the broker's GET /api/auth/me against auth's VerifyToken over gRPC.
#
# Builds release binaries, starts the all-in-one `microchat` on loopback with a throwaway data
# directory and rate limits off, waits for /readyz, runs `loadgen auth`, then stops the server.
# Extra arguments go to loadgen (e.g. --json).
#
# Environment:
#   CLIENTS=64 DURATION=10s WARMUP=2s   load of each phase
#   PIN=1                               server on CPU 0, loadgen on CPU 1 (taskset)
#   BROKER_PORT=18080 AUTH_PORT=15051   loopback ports of the server
#   CARGO_TARGET_DIR                    where cargo builds (default: target)
set -euo pipefail

cd "$(dirname "$0")/.."

target_dir="${CARGO_TARGET_DIR:-target}"
broker_addr="127.0.0.1:${BROKER_PORT:-18080}"
auth_addr="127.0.0.1:${AUTH_PORT:-15051}"
ready_timeout=60

cargo build --release -p microchat -p loadgen

server_pin=()
loadgen_pin=()
if [[ "${PIN:-0}" == 1 ]]; then
    server_pin=(taskset -c 0)
    loadgen_pin=(taskset -c 1)
fi

data_dir="$(mktemp -d)"
server_pid=""
stop_server() {
    if [[ -n "$server_pid" ]]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$data_dir"
}
trap stop_server EXIT

BROKER_LISTEN="$broker_addr" \
AUTH_LISTEN="$auth_addr" \
BROKER_AUTH_URL="http://$auth_addr" \
MICROCHAT_DATA_DIR="$data_dir" \
BROKER_RATE_LIMIT_API=off \
BROKER_RATE_LIMIT_AUTH=off \
RUST_LOG=warn \
    "${server_pin[@]}" "$target_dir/release/microchat" &
server_pid=$!

echo "waiting for http://$broker_addr/readyz (pid $server_pid)" >&2
deadline=$((SECONDS + ready_timeout))
until curl -fsS -o /dev/null --max-time 2 "http://$broker_addr/readyz" 2>/dev/null; do
    if ! kill -0 "$server_pid" 2>/dev/null; then
        echo "microchat exited before it was ready" >&2
        exit 1
    fi
    if ((SECONDS >= deadline)); then
        echo "microchat was not ready after ${ready_timeout}s" >&2
        exit 1
    fi
    sleep 0.2
done

"${loadgen_pin[@]}" "$target_dir/release/loadgen" auth \
    --broker "http://$broker_addr" \
    --auth-grpc "http://$auth_addr" \
    --clients "${CLIENTS:-64}" \
    --duration "${DURATION:-10s}" \
    --warmup "${WARMUP:-2s}" \
    "$@"
