#!/usr/bin/env bash
# `make faults`: microchat under faults and hostile input.
#
#   0. The fault matrix (tests/faults.rs): every service as its own process against the
#      machine's PostgreSQL and RabbitMQ and an SMTP server (maildev), under steady
#      traffic; one broker replica, auth, chat, the logger, mail and the listener are
#      killed with SIGKILL in turn and started again, the RabbitMQ connection is cut and
#      restored; every resilience rule of docs/ARCHITECTURE.md is checked per fault and the table written to
#      target/faults.md (docs/RELIABILITY.md).
#   1. The all-in-one under SIGKILL (tests/crash.rs): the `microchat` binary, every service
#      in one process on its SQLite files, under steady traffic (registrations, logins,
#      logouts, messages over WebSockets) is killed four times and started again on the
#      same data directory; every event, mail and audit entry is accounted for per kill
#      (0 lost, 0 duplicated, nothing left in the outboxes or the durable queue) and the
#      table written to target/faults-all-in-one.md.
#   2. A short soak (scripts/soak.sh, `make soak`'s rule) on the debug build: 200 sockets
#      × 1 msg/s (2,000 deliveries/s, which the debug build holds) for SOAK_MINUTES (3),
#      sampled every 10 s; fails when a delivery is missing or when memory, open files, a
#      WAL or a database (but the messages' own) grows without levelling off.
#   2b. schemathesis (PyPI, installed into .tools/schemathesis) generates requests from the
#      broker's own /api/openapi.json against a fresh all-in-one, signed in as an
#      administrator, with every check (`--checks all`): no 5xx, every status, header and
#      body as documented, every schema-valid request accepted and every schema-violating
#      one refused, auth not ignored; and every error a JSON body {"error": {code,
#      message}} (scripts/schemathesis_hooks.py). Any mismatch fails the run. Logout,
#      ending a session by id (its own, found through GET /api/auth/sessions, is a logout)
#      and account deletion are left out, so the run stays signed in. SCHEMATHESIS_SECONDS
#      bounds it (90 s: about 5,000 cases).
#   3. Every cargo-fuzz target in fuzz/ (the WebSocket JSON frames, the text protocol,
#      traceparent, event envelopes, account fields, log cursors) runs for FUZZ_SECONDS
#      each, starting from its corpus; a crash fails the run and leaves its input under
#      fuzz/artifacts/<target>/ (fix it, then copy the input into fuzz/corpus/<target>/
#      as a regression input).
#
# Env: SCHEMATHESIS_SECONDS (default 90), FUZZ_SECONDS (default 30), SOAK_MINUTES (default 3),
# CARGO_TARGET_DIR.
# Needs python3 and the crates.io registry (for cargo-fuzz, built once under $CARGO_TARGET_DIR/tools).
# Under CI=true a tool that cannot be had fails the run; elsewhere it is skipped, saying so.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
TOOLS="$ROOT/.tools"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
SCHEMATHESIS_VERSION=4.32.5
CARGO_FUZZ_VERSION=0.13.1
# cargo-fuzz is built once next to the builds (outside the clone in CI, so later runs
# on the same machine reuse it).
FUZZ_TOOLS="$CARGO_TARGET_DIR/tools/cargo"
failed=0

unavailable() {
    echo "faults: $1" >&2
    if [[ "${CI:-}" == "true" ]]; then exit 1; fi
    echo "faults: SKIPPED ($1)"
}

# ---- 0. the fault matrix -------------------------------------------------------------------
scripts/test-tools.sh
cargo build --workspace --bins --locked
echo "faults: the fault matrix (tests/faults.rs)"
cargo test --locked --test faults -- --ignored --nocapture || failed=1

# ---- 1. the all-in-one killed under traffic ----------------------------------------------
echo "faults: the all-in-one killed under traffic (tests/crash.rs)"
cargo test --locked --test crash -- --ignored --nocapture || failed=1

# ---- 2. a short soak ----------------------------------------------------------------------
echo "faults: a short soak on the debug build (scripts/soak.sh)"
SOAK_PROFILE=debug SOAK_MINUTES="${SOAK_MINUTES:-3}" SOAK_SOCKETS=200 SOAK_RATE=1 \
    SOAK_WARMUP=10s SOAK_INTERVAL=10 scripts/soak.sh || failed=1

# ---- 2b. schemathesis against the broker ---------------------------------------------------
install_schemathesis() {
    local venv="$TOOLS/schemathesis"
    if [[ -x "$venv/bin/schemathesis" ]] \
        && "$venv/bin/schemathesis" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
        return 0
    fi
    command -v python3 >/dev/null || return 1
    echo "faults: installing schemathesis==$SCHEMATHESIS_VERSION into .tools/schemathesis"
    { [[ -x "$venv/bin/python" ]] || python3 -m venv "$venv"; } \
        && "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
            "schemathesis==$SCHEMATHESIS_VERSION"
}

run_schemathesis() {
    cargo build --bin microchat || return 1
    local data server base token
    data="$(mktemp -d)"
    # The first account, so its owner: the admin-only routes (/api/logs, /api/admin/*,
    # /handle's mail) are tested too.
    MICROCHAT_DATA_DIR="$data" BROKER_RATE_LIMIT_AUTH=off BROKER_RATE_LIMIT_API=off RUST_LOG=warn \
        "$CARGO_TARGET_DIR/debug/microchat" --auth-listen=127.0.0.1:0 --chat-listen=127.0.0.1:0 \
        --broker-listen=127.0.0.1:0 --mail-listen=127.0.0.1:0 --listener-listen=127.0.0.1:0 \
        --listener-admin-listen=127.0.0.1:0 \
        --logger-listen=127.0.0.1:0 --frontend-listen=127.0.0.1:0 --metrics-listen=127.0.0.1:0 \
        > "$data/out" 2> "$data/err" &
    server=$!
    # shellcheck disable=SC2064 # expand now: these are this run's
    trap "kill $server 2>/dev/null || true; wait $server 2>/dev/null || true; rm -rf '$data'" RETURN
    for _ in $(seq 100); do
        base="$(sed -nE 's#^ *API +(http://[^ ]+)/api .*#\1#p' "$data/out")"
        [[ -n "$base" ]] && break
        kill -0 "$server" 2>/dev/null || { cat "$data/err" >&2; return 1; }
        sleep 0.2
    done
    [[ -n "$base" ]] || { echo "faults: microchat did not start" >&2; return 1; }
    curl -fsS -o /dev/null -X POST "$base/api/auth/register" -H 'content-type: application/json' \
        -d '{"username":"schemathesis","email":"schemathesis@example.com","password":"correct horse battery"}' \
        || return 1
    token="$(curl -fsS -X POST "$base/api/auth/login" -H 'content-type: application/json' \
        -d '{"login":"schemathesis","password":"correct horse battery"}' | sed -E 's/.*"token":"([^"]+)".*/\1/')"
    [[ -n "$token" ]] || return 1
    echo "faults: schemathesis against $base/api/openapi.json for ${SCHEMATHESIS_SECONDS:-90}s"
    (
        cd "$ROOT/scripts"
        PYTHONPATH=. SCHEMATHESIS_HOOKS=schemathesis_hooks "$TOOLS/schemathesis/bin/schemathesis" run \
            "$base/api/openapi.json" -H "Authorization: Bearer $token" \
            --checks all --max-time "${SCHEMATHESIS_SECONDS:-90}" \
            --exclude-path /api/auth/logout --exclude-path /api/users/me \
            --exclude-path '/api/auth/sessions/{id}' --workers 1 \
            --suppress-health-check all --no-color
    ) || { echo "faults: schemathesis found failures" >&2; return 1; }
    # The server must still be up and serving after all of it.
    kill -0 "$server" 2>/dev/null || { echo "faults: the broker died under schemathesis" >&2; return 1; }
    curl -fsS -o /dev/null "$base/readyz" || { echo "faults: the broker is not ready after schemathesis" >&2; return 1; }
    echo "faults: schemathesis passed; the all-in-one is still ready"
}

if install_schemathesis; then
    run_schemathesis || failed=1
else
    unavailable "schemathesis could not be installed"
fi

# ---- 3. fuzz targets -------------------------------------------------------------------
install_cargo_fuzz() {
    if [[ -x "$FUZZ_TOOLS/bin/cargo-fuzz" ]] \
        && "$FUZZ_TOOLS/bin/cargo-fuzz" --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
        return 0
    fi
    echo "faults: building cargo-fuzz $CARGO_FUZZ_VERSION into $FUZZ_TOOLS"
    cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked --root "$FUZZ_TOOLS" --quiet
}

run_fuzz() {
    local target status=0
    # cargo-fuzz builds with sanitizer flags that only nightly rustc accepts; this
    # machine has one stable toolchain, which takes them with RUSTC_BOOTSTRAP.
    export RUSTC_BOOTSTRAP=1
    local fuzz_target="$CARGO_TARGET_DIR/fuzz"
    cd "$ROOT/fuzz"
    for target in $("$FUZZ_TOOLS/bin/cargo-fuzz" list); do
        # New inputs go to a working corpus outside the clone; the committed seeds and
        # regression inputs under corpus/<target>/ are only read.
        local work="$CARGO_TARGET_DIR/fuzz-corpus/$target"
        mkdir -p "corpus/$target" "artifacts/$target" "$work"
        echo "faults: fuzzing $target for ${FUZZ_SECONDS:-30}s"
        if ! "$FUZZ_TOOLS/bin/cargo-fuzz" run --target-dir "$fuzz_target" "$target" "$work" "corpus/$target" -- \
            -max_total_time="${FUZZ_SECONDS:-30}" -max_len=65536 -print_final_stats=1 2> "artifacts/$target.log"; then
            echo "faults: $target FAILED (input under fuzz/artifacts/$target/):" >&2
            tail -n 40 "artifacts/$target.log" >&2
            status=1
        else
            grep -E "stat::number_of_executed_units|Done [0-9]+ runs" "artifacts/$target.log" | tail -n 1 || true
        fi
    done
    cd "$ROOT"
    return "$status"
}

if install_cargo_fuzz; then
    run_fuzz || failed=1
else
    unavailable "cargo-fuzz could not be built"
fi

if ((failed)); then
    echo "faults: FAILED"
    exit 1
fi
echo "faults: passed"
