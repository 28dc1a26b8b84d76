#!/usr/bin/env bash
# Real-browser end-to-end test of the web frontend: starts the all-in-one (and, until
# the all-in-one serves the pages itself, the frontend next to it) on free ports with a
# temporary data directory, then drives two headless Chromium contexts through
# frontend/e2e/chat.spec.mjs. Screenshots go to target/e2e/.
#
# Needs node, npm (playwright-core is installed into .tools/) and Debian's chromium
# (installed with apt-get when missing). When one cannot be had this prints SKIPPED
# and exits 0 — except under CI=true, where it fails.
#
# Env: E2E_FRONTEND_URL (test pages served elsewhere; nothing is started for them),
# E2E_SKIP_BUILD=1 (use the binaries as built), CHROMIUM (default /usr/bin/chromium).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
TOOLS="$ROOT/.tools"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
SHOTS="$ROOT/target/e2e"

unavailable() {
    echo "e2e: $1" >&2
    if [[ "${CI:-}" == "true" ]]; then
        echo "e2e: 0 passed, 1 failed"
        exit 1
    fi
    echo "e2e: SKIPPED ($1)"
    exit 0
}

# ---- tools -------------------------------------------------------------------------------
if [[ ! -x "$CHROMIUM" ]]; then
    if ! command -v apt-get >/dev/null; then
        unavailable "$CHROMIUM is missing and apt-get is not available"
    fi
    SUDO=()
    if [[ "$(id -u)" != 0 ]]; then
        command -v sudo >/dev/null || unavailable "$CHROMIUM is missing; installing it needs root"
        SUDO=(sudo -n)
    fi
    echo "e2e: installing chromium with apt-get"
    { "${SUDO[@]}" apt-get update -qq \
        && DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq chromium >/dev/null; } \
        || unavailable "apt-get install chromium failed"
    [[ -x "$CHROMIUM" ]] || unavailable "chromium was installed but $CHROMIUM is missing"
fi
# Reactions are emoji: without a colour emoji font the screenshots show empty boxes where
# people would see 👍 (a cosmetic gap only, so a failed install is no failure).
if [[ ! -e /usr/share/fonts/truetype/noto/NotoColorEmoji.ttf ]] && command -v apt-get >/dev/null \
    && [[ "$(id -u)" == 0 ]]; then
    echo "e2e: installing fonts-noto-color-emoji with apt-get"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fonts-noto-color-emoji >/dev/null; } \
        || echo "e2e: fonts-noto-color-emoji could not be installed; emoji show as boxes in screenshots"
fi
command -v node >/dev/null || unavailable "node is missing"
PLAYWRIGHT="$TOOLS/node_modules/playwright-core"
if [[ ! -f "$PLAYWRIGHT/package.json" ]]; then
    command -v npm >/dev/null || unavailable "npm is missing; playwright-core cannot be installed"
    echo "e2e: installing playwright-core into .tools/"
    mkdir -p "$TOOLS"
    npm install --prefix "$TOOLS" --no-audit --no-fund --loglevel=error playwright-core@1 >/dev/null \
        || unavailable "npm install playwright-core failed"
fi

# ---- binaries ----------------------------------------------------------------------------
MICROCHAT="$CARGO_TARGET_DIR/debug/microchat"
FRONTEND_BIN="$CARGO_TARGET_DIR/debug/frontend"
if [[ "${E2E_SKIP_BUILD:-}" != "1" ]]; then
    cargo build --bin microchat
fi
[[ -x "$MICROCHAT" ]] || { echo "e2e: $MICROCHAT is missing (build it: cargo build --bin microchat)"; exit 1; }

EMBEDDED_FRONTEND=false
if "$MICROCHAT" --help | grep -q -- '--frontend-listen'; then
    EMBEDDED_FRONTEND=true
elif [[ -z "${E2E_FRONTEND_URL:-}" ]]; then
    if [[ "${E2E_SKIP_BUILD:-}" != "1" ]]; then
        cargo build -p frontend --bin frontend
    fi
    [[ -x "$FRONTEND_BIN" ]] || { echo "e2e: $FRONTEND_BIN is missing (cargo build -p frontend)"; exit 1; }
fi

# ---- start -------------------------------------------------------------------------------
free_port() {
    node -e 'const s = require("net").createServer(); s.listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close(); });'
}
BROKER_PORT=$(free_port)
FRONTEND_PORT=$(free_port)
while [[ "$FRONTEND_PORT" == "$BROKER_PORT" ]]; do FRONTEND_PORT=$(free_port); done
BROKER_URL="http://127.0.0.1:$BROKER_PORT"
FRONTEND_URL="${E2E_FRONTEND_URL:-http://127.0.0.1:$FRONTEND_PORT}"
FRONTEND_ORIGIN=$(node -e 'console.log(new URL(process.argv[1]).origin)' "$FRONTEND_URL")

DATA_DIR=$(mktemp -d "${TMPDIR:-/tmp}/microchat-e2e.XXXXXX")
LOGS="$DATA_DIR/logs"
mkdir -p "$LOGS" "$SHOTS"
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$DATA_DIR"
}
trap cleanup EXIT

# The embedded backends only: no RabbitMQ, SMTP or databases from the environment.
CLEAN_ENV=(env -u AMQP_URL -u MAIL_SMTP_URL -u AUTH_DATABASE_URL -u CHAT_DATABASE_URL
    -u LOGGER_DATABASE_URL -u LOGGER_MONGO_URL -u LISTENER_DATABASE_URL -u BROKER_ALLOWED_ORIGINS
    -u FRONTEND_LISTEN -u FRONTEND_BROKER_URL -u FRONTEND_MAIL_DIR)
ARGS=(--data-dir="$DATA_DIR" --broker-listen="127.0.0.1:$BROKER_PORT"
    --auth-listen=127.0.0.1:0 --chat-listen=127.0.0.1:0 --logger-listen=127.0.0.1:0
    --mail-listen=127.0.0.1:0 --listener-listen=127.0.0.1:0 --listener-admin-listen=127.0.0.1:0
    --metrics-listen=127.0.0.1:0 --broker-rate-limit-auth=off
    --broker-allowed-origins="$FRONTEND_ORIGIN" --dev)
if $EMBEDDED_FRONTEND && [[ -z "${E2E_FRONTEND_URL:-}" ]]; then
    ARGS+=(--frontend-listen="127.0.0.1:$FRONTEND_PORT" --frontend-broker-url="$BROKER_URL")
fi
"${CLEAN_ENV[@]}" "$MICROCHAT" "${ARGS[@]}" >"$LOGS/microchat.log" 2>&1 &
PIDS+=($!)
if ! $EMBEDDED_FRONTEND && [[ -z "${E2E_FRONTEND_URL:-}" ]]; then
    "${CLEAN_ENV[@]}" FRONTEND_LISTEN="127.0.0.1:$FRONTEND_PORT" FRONTEND_BROKER_URL="$BROKER_URL" \
        FRONTEND_MAIL_DIR="$DATA_DIR/mail" "$FRONTEND_BIN" >"$LOGS/frontend.log" 2>&1 &
    PIDS+=($!)
fi

wait_for() {
    local url=$1 name=$2
    for _ in $(seq 1 150); do
        if curl -fsS -o /dev/null "$url" 2>/dev/null; then return 0; fi
        sleep 0.2
    done
    echo "e2e: $name did not come up at $url" >&2
    tail -n 30 "$LOGS"/*.log >&2 || true
    echo "e2e: 0 passed, 1 failed"
    exit 1
}
wait_for "$BROKER_URL/readyz" broker
wait_for "$FRONTEND_URL/healthz" frontend
echo "e2e: broker $BROKER_URL, frontend $FRONTEND_URL, data $DATA_DIR"

# ---- run ---------------------------------------------------------------------------------
status=0
E2E_FRONTEND_URL="$FRONTEND_URL" E2E_SCREENSHOTS="$SHOTS" E2E_PLAYWRIGHT="$PLAYWRIGHT" CHROMIUM="$CHROMIUM" \
    node frontend/e2e/chat.spec.mjs || status=$?
if [[ $status != 0 ]]; then
    echo "e2e: server logs (last lines):" >&2
    tail -n 40 "$LOGS"/*.log >&2 || true
fi
exit $status
