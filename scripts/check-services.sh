#!/usr/bin/env bash
# Checks that the machine's PostgreSQL and RabbitMQ answer, as the test suite needs.
# Under CI=true a missing service fails the run loudly; elsewhere it is a warning, and
# the tests that need it say they are skipped.
set -euo pipefail

pg_url="${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}"
amqp_url="${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}"

host_port() { # postgres://user@host:port/db -> host port
  local rest="${1#*://}"; rest="${rest#*@}"; rest="${rest%%/*}"
  echo "${rest%%:*} ${rest##*:}"
}

missing=()
for entry in "PostgreSQL|$pg_url" "RabbitMQ|$amqp_url"; do
  name="${entry%%|*}"; read -r host port <<<"$(host_port "${entry#*|}")"
  if ! timeout 3 bash -c "exec 3<>/dev/tcp/$host/$port" 2>/dev/null; then
    missing+=("$name at $host:$port")
  fi
done

if ((${#missing[@]})); then
  for service in "${missing[@]}"; do echo "check-services: $service is not reachable" >&2; done
  if [[ "${CI:-}" == "true" || "${CI:-}" == "1" ]]; then
    echo "check-services: CI needs every service; failing the run." >&2
    exit 1
  fi
  echo "check-services: continuing; tests that need a missing service will say they are skipped." >&2
fi
