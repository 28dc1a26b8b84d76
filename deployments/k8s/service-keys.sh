#!/usr/bin/env bash
# Creates the cluster's service keys: one Secret per service, `microchat-service-keys-<svc>`,
# holding that service's own private key (`<svc>.key`) and every service's public key
# (`<name>.pub`). Each Deployment mounts only its own (deployments/README.md, "Service keys").
# Run it before the first `kubectl apply -k deployments/k8s`; the keys never touch git.
#
#   deployments/k8s/service-keys.sh                  create the Secrets unless they exist
#   deployments/k8s/service-keys.sh --rotate         a new set: replace every Secret, then
#                                                    restart the six Deployments together
#   deployments/k8s/service-keys.sh --dry-run        print the Secrets as YAML (e.g. for
#                                                    kubeseal or SOPS) instead of applying them
#
# Options: --namespace NS (default microchat), --binary PATH (a `microchat` binary to run
# `admin service-keys DIR` with; default: MICROCHAT_BIN, else `cargo run -q --bin microchat`
# from this repo), --context CTX (kubectl context).
# The set is generated into a temporary directory (mode 0700) removed at exit.
set -euo pipefail
cd "$(dirname "$0")/../.."

services=(auth chat broker logger mail listener)
namespace=microchat rotate=0 dry_run=0 binary="${MICROCHAT_BIN:-}" kubectl=(kubectl)

usage() { sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
while (($#)); do
  case "$1" in
    --namespace) namespace="${2:?--namespace needs a value}"; shift 2 ;;
    --binary) binary="${2:?--binary needs a path}"; shift 2 ;;
    --context) kubectl+=(--context "${2:?--context needs a value}"); shift 2 ;;
    --rotate) rotate=1; shift ;;
    --dry-run) dry_run=1; shift ;;
    -h | --help) usage ;;
    *) echo "service-keys: unknown argument $1" >&2; usage 2 >&2 ;;
  esac
done
kubectl+=(--namespace "$namespace")

secret_name() { echo "microchat-service-keys-$1"; }

if ((!dry_run && !rotate)); then
  present=()
  for service in "${services[@]}"; do
    if "${kubectl[@]}" get secret "$(secret_name "$service")" >/dev/null 2>&1; then
      present+=("$service")
    fi
  done
  if ((${#present[@]} == ${#services[@]})); then
    echo "service-keys: every Secret microchat-service-keys-* exists in $namespace; kept (--rotate makes a new set)"
    exit 0
  fi
  if ((${#present[@]})); then
    # A new set next to old Secrets would leave the services unable to check each other.
    echo "service-keys: only some Secrets exist (${present[*]}); run with --rotate to replace them all" >&2
    exit 1
  fi
fi

keys="$(mktemp -d)"
trap 'rm -rf "$keys"' EXIT
if [[ -n "$binary" ]]; then
  "$binary" admin service-keys "$keys/set" >&2
else
  cargo run -q --locked --bin microchat -- admin service-keys "$keys/set" >&2
fi
for service in "${services[@]}"; do
  [[ -s "$keys/set/$service.key" && -s "$keys/set/$service.pub" ]] \
    || { echo "service-keys: the generator wrote no key pair for $service" >&2; exit 1; }
done

manifest() { # service: its Secret as YAML, its own private key and every public key
  local service="$1" files=() name
  files+=(--from-file="$service.key=$keys/set/$service.key")
  for name in "${services[@]}"; do files+=(--from-file="$name.pub=$keys/set/$name.pub"); done
  "${kubectl[@]}" create secret generic "$(secret_name "$service")" "${files[@]}" \
    --dry-run=client -o yaml \
    | "${kubectl[@]}" label --local -f - -o yaml \
      app.kubernetes.io/part-of=microchat app.kubernetes.io/component=service-keys
}

# The Secrets come before `kubectl apply -k`, so their namespace may not exist yet: make
# it as the kustomization does (its Pod Security labels), or plainly for another name.
if ((!dry_run)) && ! "${kubectl[@]}" get namespace "$namespace" >/dev/null 2>&1; then
  if [[ "$namespace" == microchat ]]; then
    "${kubectl[@]}" apply -f deployments/k8s/namespace.yaml >&2
  else
    "${kubectl[@]}" create namespace "$namespace" >&2
  fi
fi
for service in "${services[@]}"; do
  if ((dry_run)); then
    echo "---"
    manifest "$service"
  else
    manifest "$service" | "${kubectl[@]}" apply -f - >&2
  fi
done
((dry_run)) && exit 0

if ((rotate)); then
  # Every service loads the keys when it starts: restart all of them at once, so old and
  # new keys meet only during the rollout (calls between an old and a new pod are refused).
  deployments=()
  for service in "${services[@]}"; do
    "${kubectl[@]}" get deployment "$service" >/dev/null 2>&1 && deployments+=("deployment/$service")
  done
  if ((${#deployments[@]})); then
    "${kubectl[@]}" rollout restart "${deployments[@]}"
  fi
  echo "service-keys: a new set in $namespace; restarted: ${deployments[*]:-none yet}"
else
  echo "service-keys: Secrets microchat-service-keys-{$(IFS=,; echo "${services[*]}")} created in $namespace"
fi
