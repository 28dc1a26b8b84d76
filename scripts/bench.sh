#!/usr/bin/env bash
# Runs one loadgen scenario against a fresh all-in-one microchat on loopback.
#
#   scripts/bench.sh auth [loadgen args]   broker GET /api/auth/me vs direct VerifyToken gRPC
#   scripts/bench.sh ws   [loadgen args]   WebSocket fan-out (random sends; --paced for evenly paced,
#                                           --login-storm for a login storm, --idle for memory per socket)
#   scripts/bench.sh files [loadgen args]  attachments: concurrent uploads (MB/s, server memory) and
#                                           concurrent thumbnail downloads
#
# Builds release binaries, starts `microchat` with a throwaway data directory
# (scripts/lib/server.sh, shared with scripts/soak.sh: its environment — PIN, DB, SPLIT,
# RFS, the ports, CARGO_TARGET_DIR — is described there), waits for /readyz, runs
# loadgen, then stops the server.
set -euo pipefail
cd "$(dirname "$0")/.."

scenario="${1:?usage: scripts/bench.sh auth|ws|files [loadgen args]}"
shift

cargo build --release -p microchat -p loadgen -p auth -p chat -p broker

source scripts/lib/server.sh
start_server release

case "$scenario" in
  auth) extra=(--auth-grpc "http://$auth_addr" --service-keys "$keys_dir") ;;
  ws | files) extra=(--server-pid "$server_pid") ;;
  *) echo "unknown scenario $scenario" >&2; exit 2 ;;
esac
"${loadgen_pin[@]}" "$target_dir/release/loadgen" "$scenario" --broker "http://$broker_addr" "${extra[@]}" "$@"
