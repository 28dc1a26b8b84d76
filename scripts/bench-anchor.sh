#!/usr/bin/env bash
# microchat against the anchor: the same WebSocket load, on the same core, one after the other.
#
#   scripts/bench-anchor.sh        (make bench-ws-anchor)
#
# The anchor is ../shared/anchors/node-ws, a plain Node `ws` broadcast server (no accounts, no
# storage, no acks): what a team would write in an afternoon instead of microchat. It is
# copied under .tools/ and `npm ci`-ed there (shared/ may be read-only), then run pinned to
# CPU 0 with loadgen on CPU 1, under the load of `make bench-ws` with random sends: 10,000
# sockets in rooms of 10, over a sweep of offered deliveries/s. Then microchat takes the same
# sweep through scripts/bench.sh (PIN=1, a fresh all-in-one per rate). Each side stops at the
# first rate whose p99 is over 1 s. One table at the end: each rate's p99 on both sides, the
# highest rate each held (p99 ≤ 100 ms and at most 0.1 % of the deliveries missing or refused:
# a send refused as overloaded, or held back by a client backing off, owes its room's deliveries) and the
# ratio microchat / anchor (issue 29's goal: ≥ 2).
#
# Environment:
#   RATES="20000 30000 40000 50000 60000 80000 100000"   offered deliveries/s, in order
#   SOCKETS=10000 ROOM_SIZE=10 DURATION=20s WARMUP=40s     the load (the same for both sides)
#   SEED=<n>           the random send moments (default: one per script run, both sides alike)
#   ANCHOR_DIR=.tools/node-ws ANCHOR_PORT=19100
#   SIDES="anchor microchat"                               which sides to run
#   CARGO_TARGET_DIR   where cargo builds (default: target)
set -euo pipefail
cd "$(dirname "$0")/.."

rates=(${RATES:-20000 30000 40000 50000 60000 80000 100000})
sockets="${SOCKETS:-10000}" room_size="${ROOM_SIZE:-10}"
duration="${DURATION:-20s}" warmup="${WARMUP:-40s}"
seed="${SEED:-$(( (RANDOM << 30) ^ (RANDOM << 15) ^ RANDOM ))}"
anchor_src=../shared/anchors/node-ws
anchor_dir="${ANCHOR_DIR:-.tools/node-ws}"
anchor_port="${ANCHOR_PORT:-19100}"
sides=(${SIDES:-anchor microchat})
target_dir="${CARGO_TARGET_DIR:-target}"
# A side stops after a rate whose p99 is over this (µs); a rate is held at or under the other.
give_up_us=1000000 held_us=100000

load=(--sockets "$sockets" --room-size "$room_size" --duration "$duration" --warmup "$warmup" --seed "$seed" --json)
declare -A p99 missing
anchor_pid=""

# Records "p99_us missing_percent" of one loadgen JSON line under key $1 ("side:rate"); a run
# that printed no figures (loadgen failed, e.g. a history check that never answered) is
# recorded as failed. Succeeds when the side may go on to the next rate.
record() {
  local key="$1" line="$2"
  if ! jq -e .latency_us.p99 >/dev/null 2>&1 <<<"$line"; then
    p99[$key]=failed; missing[$key]=100
    return 1
  fi
  read -r "p99[$key]" "missing[$key]" < <(jq -r \
    '(((.refused_overloaded // 0) + (.held_back // 0)) * .room_size) as $refused
     | "\(.latency_us.p99) \(100 * (.missing_deliveries + $refused) / ([.missing_deliveries + $refused + .deliveries, 1] | max))"' \
    <<<"$line")
  ((${p99[$key]} <= give_up_us))
}

run_anchor() {
  [[ -d "$anchor_src" ]] || { echo "no anchor at $anchor_src" >&2; exit 1; }
  if ! cmp -s "$anchor_src/package-lock.json" "$anchor_dir/package-lock.json" \
      || [[ ! -d "$anchor_dir/node_modules" ]] || ! cmp -s "$anchor_src/server.mjs" "$anchor_dir/server.mjs"; then
    mkdir -p "$anchor_dir"
    cp "$anchor_src"/{package.json,package-lock.json,server.mjs,README.md} "$anchor_dir/"
    (cd "$anchor_dir" && npm ci --no-audit --no-fund --loglevel=error)
  fi
  # The same package set as scripts/bench.sh: one feature resolution, so nothing is built twice.
  cargo build --release -p microchat -p loadgen -p auth -p chat -p broker
  ulimit -n "$(ulimit -Hn)"
  trap '[[ -n "$anchor_pid" ]] && kill "$anchor_pid" 2>/dev/null; true' EXIT
  for rate in "${rates[@]}"; do
    (cd "$anchor_dir" && PORT="$anchor_port" exec taskset -c 0 node server.mjs) >&2 &
    anchor_pid=$!
    local deadline=$((SECONDS + 20))
    until (exec 3<>"/dev/tcp/127.0.0.1/$anchor_port") 2>/dev/null; do
      ((SECONDS < deadline)) || { echo "the anchor did not listen on $anchor_port" >&2; exit 1; }
      sleep 0.2
    done
    echo "anchor at $rate deliveries/s" >&2
    local line
    line="$(taskset -c 1 "$target_dir/release/loadgen" ws --target anchor \
      --broker "http://127.0.0.1:$anchor_port" --deliveries-per-sec "$rate" "${load[@]}" | tail -n 1)" || true
    kill "$anchor_pid"; wait "$anchor_pid" 2>/dev/null || true; anchor_pid=""
    record "anchor:$rate" "$line" || break
  done
}

run_microchat() {
  for rate in "${rates[@]}"; do
    echo "microchat at $rate deliveries/s" >&2
    local line
    # The last JSON line: the server may still log (to stdout) while it stops.
    line="$(PIN=1 scripts/bench.sh ws --deliveries-per-sec "$rate" "${load[@]}" | grep "^{" | tail -n 1)" || true
    record "microchat:$rate" "$line" || break
  done
}

for side in "${sides[@]}"; do
  case "$side" in
    anchor) run_anchor ;;
    microchat) run_microchat ;;
    *) echo "unknown side $side (anchor or microchat)" >&2; exit 2 ;;
  esac
done

# The table: p99 in ms (missing deliveries in brackets when any), "—" where a side did not run.
cell() {
  local key="$1:$2"
  [[ -n "${p99[$key]:-}" ]] || { printf '—'; return; }
  [[ "${p99[$key]}" != failed ]] || { printf 'failed'; return; }
  awk -v us="${p99[$key]}" -v miss="${missing[$key]}" \
    'BEGIN { printf "%.1f ms", us / 1000; if (miss > 0) printf " (%.2f %% missing or refused)", miss }'
}
best() {
  local side="$1" rate best=0
  for rate in "${rates[@]}"; do
    local key="$side:$rate"
    [[ -n "${p99[$key]:-}" && "${p99[$key]}" != failed ]] || continue
    if ((${p99[$key]} <= held_us)) && awk -v m="${missing[$key]}" 'BEGIN { exit !(m <= 0.1) }'; then
      best="$rate"
    fi
  done
  echo "$best"
}
echo
echo "WebSocket fan-out, $sockets sockets in rooms of $room_size, random sends (seed $seed), $duration measured after $warmup; server on CPU 0, loadgen on CPU 1 ($(nproc) CPUs)"
echo
echo "| offered deliveries/s | anchor (node-ws) p99 | microchat p99 |"
echo "|---:|---:|---:|"
for rate in "${rates[@]}"; do
  echo "| $rate | $(cell anchor "$rate") | $(cell microchat "$rate") |"
done
anchor_best="$(best anchor)" microchat_best="$(best microchat)"
echo
echo "highest rate held (p99 ≤ 100 ms, ≤ 0.1 % missing or refused): anchor $anchor_best, microchat $microchat_best deliveries/s"
if ((${#sides[@]} < 2)); then
  echo "ratio microchat / anchor: — (only ${sides[*]} ran)"
elif ((anchor_best > 0)); then
  awk -v m="$microchat_best" -v a="$anchor_best" 'BEGIN { printf "ratio microchat / anchor: %.2f× (goal ≥ 2×)\n", m / a }'
else
  echo "ratio microchat / anchor: — (the anchor held none of the rates)"
fi
