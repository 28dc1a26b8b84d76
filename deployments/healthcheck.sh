#!/bin/bash
# healthcheck: does this container's service answer? The image's HEALTHCHECK and the
# compose healthchecks run it; it needs nothing but bash (no curl in the image).
#   broker, listener, frontend: GET /healthz on BROKER_LISTEN / LISTENER_LISTEN / FRONTEND_LISTEN
#   auth, chat, logger, mail: the gRPC port accepts connections and, when METRICS_LISTEN
#                     is set, GET /healthz on it answers 200
# Exit 0 when healthy, 1 otherwise (with the reason on stderr).
set -uo pipefail

service="${MICROCHAT_SERVICE:?MICROCHAT_SERVICE is not set (the image sets it)}"

# 0.0.0.0:9100 -> "127.0.0.1 9100"; [::]:8080 -> "::1 8080"
target() {
    local addr="$1" host port
    port="${addr##*:}"
    host="${addr%:*}"
    host="${host#[}"
    host="${host%]}"
    case "$host" in
        "" | 0.0.0.0) host=127.0.0.1 ;;
        ::) host=::1 ;;
    esac
    echo "$host $port"
}

fail() {
    echo "healthcheck: $service: $*" >&2
    exit 1
}

tcp_ok() { # addr
    local host port
    read -r host port <<<"$(target "$1")"
    (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null
}

http_ok() { # addr path
    local host port status
    read -r host port <<<"$(target "$1")"
    { exec 3<>"/dev/tcp/$host/$port"; } 2>/dev/null || return 1
    printf 'GET %s HTTP/1.0\r\nHost: %s\r\nConnection: close\r\n\r\n' "$2" "$host" >&3
    read -r -t 3 _ status _ <&3 || status=""
    exec 3>&-
    [[ "$status" == 2?? || "$status" == 3?? ]]
}

case "$service" in
    broker) addr="${BROKER_LISTEN:-127.0.0.1:8080}"; http_ok "$addr" /healthz || fail "GET http://$addr/healthz failed" ;;
    listener) addr="${LISTENER_LISTEN:-127.0.0.1:8082}"; http_ok "$addr" /healthz || fail "GET http://$addr/healthz failed" ;;
    frontend) addr="${FRONTEND_LISTEN:-127.0.0.1:8081}"; http_ok "$addr" /healthz || fail "GET http://$addr/healthz failed" ;;
    auth | chat | logger | mail)
        var="${service^^}_LISTEN"
        default_port=$(case "$service" in auth) echo 50051 ;; chat) echo 50052 ;; logger) echo 50053 ;; mail) echo 50054 ;; esac)
        addr="${!var:-127.0.0.1:$default_port}"
        tcp_ok "$addr" || fail "gRPC port $addr does not accept connections"
        if [[ -n "${METRICS_LISTEN:-}" ]]; then
            http_ok "$METRICS_LISTEN" /healthz || fail "GET http://$METRICS_LISTEN/healthz failed"
        fi
        ;;
    *) fail "unknown service" ;;
esac
exit 0
