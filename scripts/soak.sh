#!/usr/bin/env bash
# `make soak`: resource bounds over time. A fresh all-in-one microchat (scripts/lib/server.sh,
# as scripts/bench.sh starts it) under steady WebSocket traffic for SOAK_MINUTES, nothing
# scraping /metrics, while the server process is sampled every SOAK_INTERVAL seconds:
#
#   rss        VmRSS of /proc/PID/status (bytes)
#   anon       RssAnon: the heap and stacks, without the mapped files (bytes)
#   db-mapped  the part of rss that is database pages SQLite reads through its memory
#              mapping (mmap_size: up to 256 MiB per database; /proc/PID/smaps): page
#              cache the kernel takes back when it needs to, which grows with the data read
#   fds        open file descriptors (/proc/PID/fd)
#   <file>     the size of every database file and every `*-wal` file in the data
#              directory (bytes; a missing file counts 0)
#
# At the end it prints the samples as a table and the bytes on disk per stored message
# (each file and the whole data directory, divided by the messages chat acknowledged over
# the whole run, as loadgen counted them), and fails when
#
#   - loadgen's own checks fail: a send errored, a delivery owed had not arrived 3 s after
#     the load ended, or the history of a sampled room lacks an acknowledged message; or
#   - a series grows without levelling off. The rule, per series: split the n samples
#     (n >= 6) into thirds by index (first [0, n/3), middle [n/3, 2n/3), last the rest);
#     the largest sample of the last third may exceed the largest of the middle third by
#     at most SOAK_GROWTH_PERCENT (10) % plus a slack (SOAK_SLACK_MIB, 4 MiB, for sizes;
#     SOAK_SLACK_FDS, 16, for descriptors). The first third is set-up and warm-up (caches
#     filling, sockets opening, a WAL reaching its checkpoint size) and is not judged. A
#     leak of a steady rate grows the last third's peak over the middle's by half the
#     middle's growth from zero, so any leak worth the name trips it; a series that levels
#     off, even with noise, does not. chat.db is exempt: it holds the messages, so it
#     grows with them — what it costs is the bytes per message reported. rss is judged
#     less db-mapped (the mapped pages of chat.db grow with it too), and db-mapped itself
#     is bounded by mmap_size, so not judged.
#
# Environment:
#   SOAK_MINUTES=30      measured load (loadgen --duration; 1 to 60)
#   SOAK_SOCKETS=2000    sockets, one user each, in rooms of 10
#   SOAK_RATE=1          messages per second each socket sends (2,000 × 1 × 10 = 20,000 deliveries/s)
#   SOAK_WARMUP=30s      unmeasured load before (loadgen --warmup)
#   SOAK_INTERVAL=60     seconds between samples
#   SOAK_PROFILE=release the cargo profile of the binaries (debug: `make faults`' short mode,
#                        which builds them itself)
#   SOAK_OUT=$CARGO_TARGET_DIR/soak   where the samples (samples.tsv) and loadgen's figures
#                        (loadgen.json) are left
#   SOAK_GROWTH_PERCENT=10 SOAK_SLACK_MIB=4 SOAK_SLACK_FDS=16   the rule above
#   and scripts/lib/server.sh's (PIN, BROKER_PORT, RUST_LOG, CARGO_TARGET_DIR, ...).
set -euo pipefail
cd "$(dirname "$0")/.."

minutes="${SOAK_MINUTES:-30}" sockets="${SOAK_SOCKETS:-2000}" rate="${SOAK_RATE:-1}"
warmup="${SOAK_WARMUP:-30s}" interval="${SOAK_INTERVAL:-60}" profile="${SOAK_PROFILE:-release}"
growth_percent="${SOAK_GROWTH_PERCENT:-10}" slack_mib="${SOAK_SLACK_MIB:-4}" slack_fds="${SOAK_SLACK_FDS:-16}"
out="${SOAK_OUT:-${CARGO_TARGET_DIR:-target}/soak}"

case "$profile" in
  # The package set of scripts/bench.sh: one feature resolution, so nothing is built twice.
  release) cargo build --release -p microchat -p loadgen -p auth -p chat -p broker ;;
  # `make faults` built the workspace's binaries already; the same command is then a no-op.
  debug) cargo build --workspace --bins --locked ;;
  *) echo "soak: SOAK_PROFILE is release or debug, not $profile" >&2; exit 2 ;;
esac

source scripts/lib/server.sh
mkdir -p "$out"
samples="$out/samples.tsv"
: > "$samples"

# The files a series is kept for: the databases and their write-ahead logs.
tracked_files() {
  find "$data_dir" -maxdepth 2 -type f \( -name '*.db' -o -name '*-wal' \) -printf '%P\n' | sort
}

# Appends one sample of every series: "index elapsed_seconds series value".
sample() {
  local index="$1" elapsed="$2" status file size
  status="$(cat "/proc/$server_pid/status" 2>/dev/null)" || return 1
  {
    awk -v i="$index" -v t="$elapsed" '
      /^VmRSS:/ { print i, t, "rss", $2 * 1024 }
      /^RssAnon:/ { print i, t, "anon", $2 * 1024 }' <<<"$status"
    # The databases' pages SQLite reads through its mapping (`mmap_size`, 256 MiB per
    # database): page cache the kernel may take back at any time, and they grow with the
    # data read, so the judged `rss` leaves them out (chat.db's grow with the messages).
    awk -v i="$index" -v t="$elapsed" -v dir="$data_dir/" '
      /^[0-9a-f]+-[0-9a-f]+ / { mapped = index($6, dir) == 1 && $6 ~ /\.db$/ }
      mapped && /^Rss:/ { kib += $2 }
      END { print i, t, "db-mapped", kib * 1024 }' "/proc/$server_pid/smaps" 2>/dev/null || true
    echo "$index $elapsed fds $(find "/proc/$server_pid/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)"
    while read -r file; do
      size="$(stat -c %s "$data_dir/$file" 2>/dev/null || echo 0)"
      echo "$index $elapsed $file $size"
    done < <(tracked_files)
  } >> "$samples"
}

# Samples every $interval seconds until the server or the sampler is stopped.
sampler() {
  local index=0
  while sample "$index" "$((SECONDS - started))"; do
    index=$((index + 1))
    sleep "$interval"
  done
}

start_server "$profile"
echo "soak: $sockets sockets × $rate msg/s in rooms of 10 for ${minutes} min (+ $warmup warm-up), a sample every ${interval}s; nproc $(nproc); data in $data_dir" >&2
started=$SECONDS
sampler & sampler_pid=$!
status=0
"${loadgen_pin[@]}" "$target_dir/$profile/loadgen" ws --broker "http://$broker_addr" \
  --sockets "$sockets" --room-size 10 --rate "$rate" --warmup "$warmup" \
  --duration "${minutes}m" --json > "$out/loadgen.json" || status=1
# One last sample with the load over, then the sampler stops.
kill "$sampler_pid" 2>/dev/null || true; wait "$sampler_pid" 2>/dev/null || true
sample "$(awk 'END { print $1 + 1 }' "$samples")" "$((SECONDS - started))" || true

# ---- loadgen's checks -----------------------------------------------------------------
figures="$(tail -n 1 "$out/loadgen.json")"
if ! jq -e . >/dev/null 2>&1 <<<"$figures"; then
  echo "soak: FAILED: loadgen printed no figures" >&2
  exit 1
fi
jq -r '"loadgen: sent \(.sent) in the measured window, \(.acked_all) acknowledged over the whole run, errors \(.errors); deliveries \(.deliveries) of \(.expected_deliveries), \(.missing_deliveries) missing; p50 \(.latency_us.p50 / 1000) ms, p99 \(.latency_us.p99 / 1000) ms, max \(.latency_us.max / 1000) ms; history complete: \(.history_complete)"' <<<"$figures"
if ! jq -e '.errors == 0 and .missing_deliveries == 0 and .history_complete == true' >/dev/null <<<"$figures"; then
  echo "soak: FAILED: loadgen's checks (errors, missing deliveries or incomplete history)" >&2
  status=1
fi
stored="$(jq -r .acked_all <<<"$figures")"

# ---- the table, the bytes per message, the growth rule --------------------------------
echo
echo "samples (sizes in MiB; t: seconds since loadgen started setting up; the last one after the load ended):"
awk '
  { t[$1] = $2; v[$1, $3] = $4; if (!($3 in seen)) { seen[$3] = 1; order[++n] = $3 } if ($1 > last) last = $1 }
  END {
    printf "%6s", "t"
    for (s = 1; s <= n; s++) printf " %12s", order[s]
    print ""
    for (i = 0; i <= last; i++) {
      printf "%6s", t[i]
      for (s = 1; s <= n; s++) {
        x = v[i, order[s]] + 0
        if (order[s] == "fds") printf " %12d", x; else printf " %12.1f", x / 1048576
      }
      print ""
    }
  }' "$samples"

echo
echo "bytes on disk per stored message ($stored messages acknowledged):"
total=0
while read -r size name; do
  name="${name#"$data_dir"/}"
  [[ "$name" == vmstat.log || "$name" == service-keys ]] && continue
  total=$((total + size))
  printf '  %-28s %12d bytes %10.1f bytes/message\n' "$name" "$size" "$(jq -n "$size / ([$stored, 1] | max)")"
done < <(du -s --block-size=1 "$data_dir"/* | sort -k2)
printf '  %-28s %12d bytes %10.1f bytes/message\n' "all" "$total" "$(jq -n "$total / ([$stored, 1] | max)")"

echo
if ! awk -v pct="$growth_percent" -v slack_bytes="$((slack_mib * 1048576))" -v slack_fds="$slack_fds" '
  { v[$1, $3] = $4; if (!($3 in seen)) { seen[$3] = 1; order[++n] = $3 } if ($1 + 1 > count) count = $1 + 1 }
  END {
    if (count < 6) { printf "soak: FAILED: %d samples, the growth rule needs 6 or more\n", count; exit 1 }
    a = int(count / 3); b = int(2 * count / 3); failed = 0
    for (s = 1; s <= n; s++) {
      name = order[s]
      if (name == "chat.db" || name == "db-mapped") continue
      # rss is judged without the mapped database pages (see sample()).
      less = name == "rss" ? "db-mapped" : ""
      middle = 0; end = 0
      for (i = a; i < b; i++) { x = v[i, name] - v[i, less]; if (x > middle) middle = x }
      for (i = b; i < count; i++) { x = v[i, name] - v[i, less]; if (x > end) end = x }
      if (name == "rss") name = "rss - db-mapped"
      slack = name == "fds" ? slack_fds : slack_bytes
      bound = middle * (1 + pct / 100) + slack
      verdict = end > bound ? "GROWS" : "levels off"
      if (end > bound) failed = 1
      if (name == "fds") printf "  %-22s middle third max %10d, last third max %10d (bound %d): %s\n", name, middle, end, bound, verdict
      else printf "  %-22s middle third max %8.1f MiB, last third max %8.1f MiB (bound %.1f): %s\n", name, middle / 1048576, end / 1048576, bound / 1048576, verdict
    }
    exit failed
  }' "$samples"; then
  echo "soak: FAILED: a series grows without levelling off (above: GROWS)" >&2
  status=1
fi
if ((status)); then echo "soak: FAILED"; exit 1; fi
echo "soak: passed (samples in $samples)"
