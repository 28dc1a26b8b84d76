# shellcheck shell=bash
# Sourced by scripts/bench.sh and scripts/soak.sh: starts a fresh microchat on loopback
# (the all-in-one, or with SPLIT=1 auth, chat and the broker as processes of their own)
# with a throwaway data directory, and stops it again when the sourcing script exits.
#
#   source scripts/lib/server.sh
#   start_server release        # or debug: the binaries under $CARGO_TARGET_DIR/<profile>/
#   ... "${loadgen_pin[@]}" "$target_dir/release/loadgen" ws --broker "http://$broker_addr" ...
#
# After start_server: server_pid (the all-in-one, or the broker), data_dir, keys_dir,
# broker_addr, auth_addr, chat_addr, target_dir, loadgen_pin (an array: taskset with PIN=1).
# The server runs with rate limits off and a cheap password hash (a run registers
# thousands of users; production keeps the OWASP cost).
#
# Environment:
#   PIN=1              server on CPU 0, loadgen on CPU 1 (taskset), as in a fair side-by-side run
#   DB=postgres        auth and chat on fresh databases of the local PostgreSQL (default: SQLite)
#   SPLIT=1            auth, chat and broker as separate processes (memory figures are then the
#                      broker's alone; with PIN=1 the broker gets CPU 0 and the others share CPU 1),
#                      signing their calls with one set of service keys made for the run
#   RFS=1              Receive Flow Steering on the loopback device (root; restored at the end):
#                      the kernel handles each TCP segment's receiving side on the core of the
#                      process that reads it, as two machines would. Without it, loopback runs
#                      the receiver's TCP work on the *sender's* core, so with PIN=1 the server's
#                      core also pays for much of loadgen's receiving. Reported either way.
#   BROKER_PORT=18080 AUTH_PORT=15051 CHAT_PORT=15052
#                      (below the kernel's ephemeral range, which loadgen's 10,000 client
#                      sockets draw from; the services no one dials by number take port 0)
#   CARGO_TARGET_DIR   where cargo builds (default: target)

target_dir="${CARGO_TARGET_DIR:-target}"
broker_addr="127.0.0.1:${BROKER_PORT:-18080}"
auth_addr="127.0.0.1:${AUTH_PORT:-15051}"
chat_addr="127.0.0.1:${CHAT_PORT:-15052}"

server_pin=() loadgen_pin=()
if [[ "${PIN:-0}" == 1 ]]; then server_pin=(taskset -c 0) loadgen_pin=(taskset -c 1); fi

data_dir="$(mktemp -d)"
keys_dir="$data_dir/service-keys"
server_pid="" databases=() helpers=() vmstat_pid="" rfs_saved=()
rfs_entries=/proc/sys/net/core/rps_sock_flow_entries
rfs_flows=/sys/class/net/lo/queues/rx-0/rps_flow_cnt

# Stops what start_server started and removes the data directory (the EXIT trap).
stop_server() {
  for pid in "$server_pid" "${helpers[@]}"; do
    if [[ -n "$pid" ]]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  done
  if [[ -n "$vmstat_pid" ]]; then
    kill "$vmstat_pid" 2>/dev/null || true
    # The hypervisor's steal time: this VM has noisy neighbours, so every run says how much
    # of the CPU was taken from it (vmstat's `st` column, one sample a second).
    awk 'NR > 3 && $17 ~ /^[0-9]+$/ { n++; sum += $17; if ($17 > max) max = $17 }
         END { if (n) printf "steal time during the run: mean %.1f %%, max %d %% (%d s)\n", sum / n, max, n }' \
      "$data_dir/vmstat.log" >&2 || true
  fi
  if ((${#rfs_saved[@]})); then
    echo "${rfs_saved[0]}" > "$rfs_entries"; echo "${rfs_saved[1]}" > "$rfs_flows"
  fi
  for db in "${databases[@]}"; do psql -q "postgres://postgres@127.0.0.1:5432/test" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" || true; done
  rm -rf "$data_dir"
}
trap stop_server EXIT

# Starts the server from the binaries of cargo profile $1 (release or debug) and waits
# until the broker's /readyz answers (60 s at most).
start_server() {
  local bin="$target_dir/${1:?start_server needs a cargo profile}"
  if [[ "${DB:-sqlite}" == postgres ]]; then
    for service in auth chat; do
      db="bench_${service}_$$"; databases+=("$db")
      psql -q "postgres://postgres@127.0.0.1:5432/test" -c "CREATE DATABASE $db"
      export "${service^^}_DATABASE_URL=postgres://postgres@127.0.0.1:5432/$db"
    done
  fi

  if [[ "${RFS:-0}" == 1 ]]; then
    rfs_saved=("$(cat "$rfs_entries")" "$(cat "$rfs_flows")")
    echo 65536 > "$rfs_entries"; echo 65536 > "$rfs_flows"
    echo "receive flow steering on loopback: on (restored at the end)" >&2
  fi
  vmstat 1 > "$data_dir/vmstat.log" 2>/dev/null & vmstat_pid=$!

  ulimit -n "$(ulimit -Hn)"
  # The service keys the processes sign their calls to each other with (and loadgen's
  # direct VerifyToken calls, as the broker): the all-in-one would make them on its first
  # start, the split processes need them before. One directory for all: one machine, one user.
  "$bin/microchat" admin service-keys "$keys_dir" >/dev/null
  export MICROCHAT_SERVICE_KEYS="$keys_dir"
  export BROKER_LISTEN="$broker_addr" AUTH_LISTEN="$auth_addr" CHAT_LISTEN="$chat_addr" \
    BROKER_AUTH_URL="http://$auth_addr" BROKER_CHAT_URL="http://$chat_addr" \
    LISTENER_LISTEN=127.0.0.1:0 LISTENER_ADMIN_LISTEN=127.0.0.1:0 \
    LOGGER_LISTEN=127.0.0.1:0 MAIL_LISTEN=127.0.0.1:0 FRONTEND_LISTEN=127.0.0.1:0 \
    MICROCHAT_DATA_DIR="$data_dir" BROKER_RATE_LIMIT_API=off BROKER_RATE_LIMIT_AUTH=off \
    BROKER_WS_FRAMES_PER_SECOND=1000 AUTH_ARGON2_MEMORY_KIB=64 AUTH_ARGON2_ITERATIONS=1 \
    MICROCHAT_METRICS_LISTEN=127.0.0.1:0 \
    AUTH_ACCESS_TOKEN_TTL=2h RUST_LOG="${RUST_LOG:-warn}"
  helpers=()
  if [[ "${SPLIT:-0}" == 1 ]]; then
    local others_pin=(); [[ "${PIN:-0}" == 1 ]] && others_pin=(taskset -c 1)
    for service in auth chat; do
      "${others_pin[@]}" "$bin/$service" & helpers+=($!)
    done
    "${server_pin[@]}" "$bin/broker" &
  else
    "${server_pin[@]}" "$bin/microchat" &
  fi
  server_pid=$!
  local deadline=$((SECONDS + 60))
  until curl -fsS -o /dev/null --max-time 2 "http://$broker_addr/readyz" 2>/dev/null; do
    kill -0 "$server_pid" 2>/dev/null || { echo "microchat exited before it was ready" >&2; exit 1; }
    ((SECONDS < deadline)) || { echo "microchat was not ready after 60s" >&2; exit 1; }
    sleep 0.2
  done
}
