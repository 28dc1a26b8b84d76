#!/usr/bin/env python3
"""Checks deployments/ against the code: `make check-deployments` (part of `make test`).

Fails (exit 1, one line per problem) when
  - a compose file, Kubernetes manifest, Prometheus or Grafana file does not parse or
    lacks required keys (services with image/build and a healthcheck; Deployments and
    StatefulSets with containers, probes, resources, a non-root securityContext; ...);
  - a port does not match the service's port (docs/ARCHITECTURE.md's table, which each binary's
    `*_LISTEN` default must agree with; 9100 for METRICS_LISTEN), or a URL names a
    service on a port it does not serve;
  - an environment variable set for a service (compose environment/env_file, Kubernetes
    env/envFrom) is not one that service's binary knows;
  - an internal gRPC port (50051-50054) is published to the host in compose, or exposed
    by a non-ClusterIP Service or the Ingress (or the Ingress routes to a gRPC service or
    the listener's admin port);
  - the listener's admin API (its own port, 8083) could be reached without its bearer
    token or from outside the namespace: its address defaults to something but loopback,
    compose moves it off the container's loopback, Kubernetes binds it beyond loopback
    without the token from a Secret, a Service targets it, or a NetworkPolicy rule admits
    another namespace to it (or to every port);
  - a service that signs or checks gRPC calls (auth, chat, broker, logger, mail, listener)
    does not read MICROCHAT_SERVICE_KEYS, or it points where its keys are not mounted: in
    compose, read-only from the volume a one-shot `admin service-keys DIR` writes before
    the service starts (nothing else mounts it); in Kubernetes, its own Secret
    microchat-service-keys-<service>, read-only and unreadable by other users; a pod reads
    another service's key Secret; such a Secret is committed rather than made by
    deployments/k8s/service-keys.sh.

The names a binary knows come from `<target>/debug/<service> --help` (the `[env: NAME]`
entries, subcommands included), the target dir being CARGO_TARGET_DIR or ./target, when
that binary is newer than its sources; otherwise (missing or stale binary) from the
sources themselves: the `env = "NAME"` of the crate's clap arguments, of the `platform`
config structs it uses, and its `std::env::var("NAME")` reads. `--build` builds a
missing or stale binary with `cargo build -p <service>` instead.

Needs PyYAML: run it with .tools/venv/bin/python (scripts/test-tools.sh installs it).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

try:
    import yaml
except ImportError:  # pragma: no cover - the message is the point
    sys.exit(
        "check-deployments: PyYAML is missing; run scripts/test-tools.sh (it installs PyYAML "
        "into .tools/venv) and run this script with .tools/venv/bin/python"
    )

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deployments"
K8S = DEPLOY / "k8s"
COMPOSE = DEPLOY / "docker-compose.yml"


@dataclass(frozen=True)
class AdminApi:
    port: int  # its default port, on loopback
    listen: str  # the variable of its address
    token: str  # the variable of the bearer token it needs beyond loopback


@dataclass(frozen=True)
class Service:
    port: int  # docs/ARCHITECTURE.md, "listens (default)"
    listen: str  # the variable of its listen address
    grpc: bool  # its /metrics and /healthz are on METRICS_LISTEN (the gRPC services, the broker)
    admin: AdminApi | None = None  # an admin API on a port of its own


# The design's services and ports (docs/ARCHITECTURE.md, "The services, their ports and who calls whom").
SERVICES = {
    "auth": Service(50051, "AUTH_LISTEN", True),
    "chat": Service(50052, "CHAT_LISTEN", True),
    "logger": Service(50053, "LOGGER_LISTEN", True),
    "mail": Service(50054, "MAIL_LISTEN", True),
    # Its /metrics is on the ops port 9100, never on the public 8080.
    "broker": Service(8080, "BROKER_LISTEN", True),
    "listener": Service(8082, "LISTENER_LISTEN", False,
                        AdminApi(8083, "LISTENER_ADMIN_LISTEN", "LISTENER_ADMIN_TOKEN")),
    "frontend": Service(8081, "FRONTEND_LISTEN", False),
}
GRPC_PORTS = range(50051, 50055)
METRICS_PORT = 9100
# Only these may be reached from outside (Ingress backends, published compose ports).
PUBLIC = {"broker", "frontend"}
# Read by the platform's tracing set-up in every service that uses platform telemetry.
PLATFORM_LOGGING = {"RUST_LOG", "LOG_FORMAT"}
# The frontend crate does not exist yet: until its binary or sources do, these two
# (its listen address and the broker URL the pages call) are the names it is known by.
FRONTEND_FALLBACK = {"FRONTEND_LISTEN", "FRONTEND_BROKER_URL"}
# Infrastructure containers and the ports they serve.
INFRA_PORTS = {
    "postgres": {5432},
    "rabbitmq": {5672, 15672},
    "mongodb": {27017},
    "mailhog": {1025, 8025},
    "prometheus": {9090},
    "grafana": {3000},
}
DEFAULT_SCHEME_PORTS = {"postgres": 5432, "postgresql": 5432, "amqp": 5672, "mongodb": 27017,
                        "smtp": 25, "http": 80, "https": 443}
# Browser-facing URLs: they name the broker as the browser sees it, not as a container does.
BROWSER_URLS = {"FRONTEND_BROKER_URL", "BROKER_ALLOWED_ORIGINS", "LISTENER_PAGES_URL"}
# The routes the Ingress must send to the broker, and the frontend's.
BROKER_ROUTES = {"/api", "/ws", "/handle", "/apiv2"}
# Metrics the dashboard must show (the brief of the dev stack's Grafana).
DASHBOARD_METRICS = {
    "http_requests_total", "http_request_duration_seconds", "broker_sockets",
    "chat_messages_total", "listener_events_total", "listener_event_lag_seconds",
    "mail_sent_total", "logs_dropped_total", "logs_shipped_total",
}
K8S_NAMESPACE = "microchat"
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PersistentVolume",
                  "StorageClass", "IngressClass", "CustomResourceDefinition"}
BROKER_WS_IDLE_SECONDS = 75
# The services that sign or check gRPC calls (platform/src/service_auth): each needs its
# own private key and every public key, in the directory MICROCHAT_SERVICE_KEYS names.
KEY_HOLDERS = ("auth", "chat", "broker", "logger", "mail", "listener")
KEYS_VAR = "MICROCHAT_SERVICE_KEYS"
KEYS_SECRET = "microchat-service-keys-"  # + the service: its Kubernetes Secret
KEYS_SCRIPT = K8S / "service-keys.sh"

errors: list[str] = []
notes: list[str] = []


def rel(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def error(where, message: str) -> None:
    where = rel(where) if isinstance(where, Path) else where
    errors.append(f"{where}: {message}")


# --- what each binary knows ----------------------------------------------------------------

@dataclass
class Known:
    names: set[str] = field(default_factory=set)
    listen_default: str | None = None
    source: str = ""
    defaults: dict[str, str] = field(default_factory=dict)  # variable -> its default


ENV_HELP = re.compile(r"\[env: ([A-Z][A-Z0-9_]*)(?:=[^\]]*)?\]")
ARG_ATTR = re.compile(r"#\[arg\((.*?)\)\]", re.S)
ENV_ATTR = re.compile(r'\benv\s*=\s*"([A-Z][A-Z0-9_]*)"')
DEFAULT_ATTR = re.compile(r'\bdefault_value\s*=\s*"([^"]*)"')
ENV_READ = re.compile(r'env::var(?:_os)?\(\s*"([A-Z][A-Z0-9_]*)"\s*\)')
STRUCT = re.compile(r"\bstruct\s+([A-Z]\w*)")
# `#[command(flatten)]` then a field: the flattened struct's name (the path's last segment).
FLATTEN = re.compile(r"#\[command\(flatten\)\]\s*(?:///[^\n]*\n\s*)*(?:pub\s+)?\w+\s*:\s*(?:\w+::)*(\w+)")


def rust_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*.rs") if "target" not in p.parts) if directory.is_dir() else []


def target_dir() -> Path:
    target = Path(os.environ.get("CARGO_TARGET_DIR", "target"))
    return target if target.is_absolute() else ROOT / target


def newest_source(service: str) -> float:
    paths = rust_files(ROOT / service / "src") + rust_files(ROOT / "platform" / "src")
    paths.append(ROOT / service / "Cargo.toml")
    return max((p.stat().st_mtime for p in paths if p.exists()), default=0.0)


def run_help(binary: Path, args: list[str]) -> str:
    try:
        done = subprocess.run([str(binary), *args, "--help"], capture_output=True, text=True, timeout=20,
                              env={**os.environ, "NO_COLOR": "1"})
    except (OSError, subprocess.TimeoutExpired) as failure:
        raise RuntimeError(f"{binary} {' '.join(args)} --help: {failure}") from failure
    if done.returncode != 0:
        raise RuntimeError(f"{binary} {' '.join(args)} --help exited {done.returncode}: {done.stderr.strip()[:200]}")
    return done.stdout


def subcommands(help_text: str) -> list[str]:
    match = re.search(r"^Commands:\n((?:  \S.*\n?)+)", help_text, re.M)
    if not match:
        return []
    return [line.split()[0] for line in match.group(1).splitlines() if line.split() and line.split()[0] != "help"]


def from_help(binary: Path, listen_var: str) -> Known:
    known = Known(source=f"{binary.name} --help")
    texts, queue = [], [[]]
    while queue:
        args = queue.pop()
        text = run_help(binary, args)
        texts.append(text)
        if len(args) < 2:
            queue += [args + [cmd] for cmd in subcommands(text)]
    for text in texts:
        known.names |= set(ENV_HELP.findall(text))
        for line in text.splitlines():
            if line.lstrip().startswith("Logging:"):
                known.names |= set(re.findall(r"\b[A-Z][A-Z0-9_]{2,}\b", line))
        # "[env: AUTH_LISTEN=] [default: 127.0.0.1:50051]" (either order, one line)
        for line in text.splitlines():
            env, default = ENV_HELP.search(line), re.search(r"\[default: ([^\]]+)\]", line)
            if env and default:
                known.defaults[env.group(1)] = default.group(1)
    known.listen_default = known.defaults.get(listen_var)
    return known


def platform_structs() -> dict[str, set[str]]:
    """The env names of each clap config struct in platform/src, its flattened ones' included.

    A binary's shared start-up flattens platform structs into one another (`process::Args`
    holds the telemetry's and the service keys'), so a struct's names are its own and those
    of every struct it flattens, however deep.
    """
    structs: dict[str, set[str]] = {}
    flattens: dict[str, set[str]] = {}
    for path in rust_files(ROOT / "platform" / "src"):
        text = path.read_text(errors="replace")
        for attr in ARG_ATTR.finditer(text):
            names = ENV_ATTR.findall(attr.group(1))
            owners = STRUCT.findall(text[: attr.start()])
            if names and owners:
                structs.setdefault(owners[-1], set()).update(names)
        for field in FLATTEN.finditer(text):
            owners = STRUCT.findall(text[: field.start()])
            if owners:
                flattens.setdefault(owners[-1], set()).add(field.group(1))
    resolved: dict[str, set[str]] = {}
    for struct in set(structs) | set(flattens):
        names, seen, todo = set(), set(), [struct]
        while todo:
            current = todo.pop()
            if current in seen:
                continue
            seen.add(current)
            names |= structs.get(current, set())
            todo += flattens.get(current, set())
        if names:
            resolved[struct] = names
    return resolved


def from_sources(service: str, listen_var: str) -> Known:
    known = Known(source=f"{service}/src (sources)")
    text = "\n".join(p.read_text(errors="replace") for p in rust_files(ROOT / service / "src"))
    for attr in ARG_ATTR.finditer(text):
        names = ENV_ATTR.findall(attr.group(1))
        known.names |= set(names)
        default = DEFAULT_ATTR.search(attr.group(1))
        if names and default:
            known.defaults[names[0]] = default.group(1)
    known.listen_default = known.defaults.get(listen_var)
    known.names |= set(ENV_READ.findall(text))
    for struct, names in platform_structs().items():
        if re.search(rf"\b{struct}\b", text):
            known.names |= names
    if re.search(r"\btelemetry::", text):  # TelemetryConfig or init_tracing
        known.names |= PLATFORM_LOGGING
    return known


def discover(service: str, build: bool) -> Known:
    spec = SERVICES[service]
    crate = ROOT / service
    if not (crate / "Cargo.toml").exists():
        if service == "frontend":
            return Known(set(FRONTEND_FALLBACK), f"127.0.0.1:{spec.port}", "hard-coded (no frontend crate yet)")
        error(crate, "no such crate")
        return Known(source="missing")
    binary = target_dir() / "debug" / service
    fresh = binary.exists() and binary.stat().st_mtime >= newest_source(service)
    if not fresh and build:
        done = subprocess.run(["cargo", "build", "-q", "-p", service], cwd=ROOT)
        fresh = done.returncode == 0 and binary.exists()
    if fresh:
        try:
            known = from_help(binary, spec.listen)
        except RuntimeError as failure:
            notes.append(f"{failure}; reading the sources instead")
            known = from_sources(service, spec.listen)
    else:
        known = from_sources(service, spec.listen)
    # Reads outside clap (e.g. DATABASE_URL, which auth, chat and the listener honour alone).
    known.names |= set(ENV_READ.findall(
        "\n".join(p.read_text(errors="replace") for p in rust_files(crate / "src"))))
    if not known.names:
        error(crate, f"found no environment variables ({known.source})")
    if spec.listen not in known.names:
        error(crate, f"{spec.listen} is not among its variables ({known.source})")
    if known.listen_default and port_of(known.listen_default) != spec.port:
        error(crate, f"{spec.listen} defaults to {known.listen_default}, but docs/ARCHITECTURE.md gives port {spec.port}")
    if spec.admin:
        for var in (spec.admin.listen, spec.admin.token):
            if var not in known.names:
                error(crate, f"{var} is not among its variables ({known.source})")
        default = known.defaults.get(spec.admin.listen)
        if default and (port_of(default) != spec.admin.port or host_of(default) not in LOOPBACK):
            error(crate, f"{spec.admin.listen} defaults to {default}, not loopback port {spec.admin.port}")
    return known


# --- helpers -------------------------------------------------------------------------------

def port_of(addr: str) -> int | None:
    match = re.search(r":(\d+)$", str(addr).strip())
    return int(match.group(1)) if match else None


def host_of(addr: str) -> str:
    host = str(addr).strip().rsplit(":", 1)[0]
    return host.strip("[]")


LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def load_yaml(path: Path, multi: bool = False):
    try:
        text = path.read_text()
    except OSError as failure:
        error(path, f"cannot read: {failure}")
        return None
    try:
        return [d for d in yaml.safe_load_all(text)] if multi else yaml.safe_load(text)
    except yaml.YAMLError as failure:
        error(path, f"does not parse as YAML: {failure}")
        return None


INTERPOLATION = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def interpolate(value):
    """Compose's variable interpolation, with the defaults the file gives."""
    if isinstance(value, dict):
        return {k: interpolate(v) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v) for v in value]
    if not isinstance(value, str):
        return value

    def one(match):
        if match.group(0) == "$$":
            return "$"
        name = match.group(1) or match.group(4)
        op, default = match.group(2), match.group(3) or ""
        current = os.environ.get(name)
        if op in (":-", ":?") and not current:
            return default if op == ":-" else ""
        if op in ("-", "?") and current is None:
            return default if op == "-" else ""
        return current or ""

    return INTERPOLATION.sub(one, value)


def dotenv_names(path: Path) -> list[str]:
    names, quote = [], None
    for line in path.read_text().splitlines():
        if quote:
            if line.rstrip().endswith(quote):
                quote = None
            continue
        match = re.match(r"\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$", line)
        if not match or line.lstrip().startswith("#"):
            continue
        names.append(match.group(1))
        value = match.group(2)
        if value[:1] in "\"'" and (len(value) == 1 or not value.rstrip().endswith(value[0])):
            quote = value[0]
    return names


def check_env_names(where: str, service: str, names, known: dict[str, Known]) -> None:
    k = known[service]
    for name in names:
        if name not in k.names:
            error(where, f"{service}: {name} is not a variable the {service} binary knows "
                         f"(known from {k.source}: {', '.join(sorted(k.names))})")


URL_TARGET = re.compile(r"(?:[A-Z]+_)?(AUTH|CHAT|LOGGER|MAIL|BROKER)_URL")


def check_url(where: str, service: str, name: str, value: str, ports_of) -> None:
    """A URL in a setting names a service on a port it serves; ports_of(host) -> set | None."""
    if "://" not in str(value):
        return
    for item in str(value).split(","):
        parts = urlsplit(item.strip())
        host = parts.hostname
        if not host:
            continue
        try:
            port = parts.port or DEFAULT_SCHEME_PORTS.get(parts.scheme)
        except ValueError:
            error(where, f"{service}: {name}={item}: bad port")
            continue
        expected = URL_TARGET.fullmatch(name)
        if name in BROWSER_URLS:
            if host in LOOPBACK and expected and port != SERVICES["broker"].port:
                error(where, f"{service}: {name}={item}: the broker's port is {SERVICES['broker'].port}")
            continue
        if host in LOOPBACK:
            # Inside a container, loopback is the container itself.
            own = ports_of(service) or set()
            if port not in own:
                error(where, f"{service}: {name}={item}: loopback inside the container, where nothing serves port {port}")
            continue
        if expected and host.split(".")[0] != expected.group(1).lower():
            error(where, f"{service}: {name}={item}: should name the {expected.group(1).lower()} service")
        served = ports_of(host)
        if served is None:
            continue  # outside the deployment (placeholder or external host)
        if port not in served:
            error(where, f"{service}: {name}={item}: {host.split('.')[0]} serves {sorted(served)}, not {port}")


# --- Dockerfile -----------------------------------------------------------------------------

def check_dockerfile() -> None:
    path = DEPLOY / "Dockerfile"
    if not path.exists():
        error(path, "missing")
        return
    text = path.read_text()
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", text, re.M | re.I)
    if len(stages) < 2:
        error(path, "not a multi-stage build")
    if not re.search(r"^ARG SERVICE\b", text, re.M):
        error(path, "no build arg SERVICE")
    if not re.search(r"cargo build\b[^\n]*--release[^\n]*--locked[^\n]*-p\s+\"?\$\{?SERVICE", text):
        error(path, "no `cargo build --release --locked -p $SERVICE`")
    if "cargo chef cook" not in text and "dummy" not in text.lower():
        error(path, "no cached dependency layer (cargo chef cook, or a dummy build)")
    final = text[text.rfind("\nFROM "):] if "\nFROM " in text else text
    base = stages[-1][0] if stages else ""
    if not re.match(r"(debian:\S*slim|\$\{?DEBIAN_RELEASE\}?-slim|debian:\$\{DEBIAN_RELEASE\}-slim|gcr\.io/distroless/cc)", base):
        error(path, f"runtime stage is {base}, not debian slim or distroless cc")
    for needed, what in [(r"ca-certificates", "installs no ca-certificates"),
                         (r"^USER\s+(?!root\b|0\b|0:)\S+", "does not switch to a non-root USER"),
                         (r"^HEALTHCHECK\s", "has no HEALTHCHECK"), (r"^ENTRYPOINT\s", "has no ENTRYPOINT"),
                         (r"^EXPOSE\s", "EXPOSEs no port")]:
        if not re.search(needed, final, re.M):
            error(path, f"the runtime stage {what}")
    for source in re.findall(r"^COPY\s+(?!--from)(\S+)\s+\S+", text, re.M):
        if source != "." and not (ROOT / source).exists():
            error(path, f"COPY {source}: no such file in the build context")
    script = DEPLOY / "healthcheck.sh"
    if script.exists():
        body = script.read_text()
        for service in SERVICES:
            if not re.search(rf"\b{service}\b[^\n]*\)", body):
                error(script, f"has no case for {service}")
    ignore = ROOT / ".dockerignore"
    if not ignore.exists():
        error(ignore, "missing")
    else:
        entries = {line.strip().strip("/") for line in ignore.read_text().splitlines()}
        for needed in ["target", ".tools", "data", "node_modules", ".git"]:
            if needed not in entries:
                error(ignore, f"does not exclude {needed}/")


# --- compose --------------------------------------------------------------------------------

def compose_ports(entry):
    """(host_ip, published, target) of a compose `ports` entry."""
    if isinstance(entry, dict):
        return str(entry.get("host_ip", "")), str(entry.get("published", "")), str(entry.get("target", ""))
    text = str(entry).split("/")[0]
    parts = text.rsplit(":", 2) if text.count(":") >= 2 else text.split(":")
    if len(parts) == 3:
        return parts[0].strip("[]"), parts[1], parts[2]
    if len(parts) == 2:
        return "", parts[0], parts[1]
    return "", "", parts[0]


def port_range(text: str) -> list[int]:
    text = str(text).strip()
    if not text:
        return []
    if "-" in text:
        low, high = text.split("-", 1)
        return list(range(int(low), int(high) + 1))
    return [int(text)]


def environment_of(spec) -> dict[str, str]:
    env = spec.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in map(str, env))
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def compose_schema(raw) -> None:
    """The compose specification's JSON schema, when check-jsonschema (which vendors it) is installed."""
    try:
        import check_jsonschema
        import jsonschema
    except ImportError:
        notes.append("check-jsonschema is not installed: the compose file was not checked against the compose "
                     "specification's schema (`.tools/venv/bin/pip install check-jsonschema` adds that)")
        return
    schema_path = Path(check_jsonschema.__file__).parent / "builtin_schemas" / "vendor" / "compose-spec.json"
    if not schema_path.exists():
        notes.append(f"check-jsonschema has no {schema_path.name}: the compose schema was not checked")
        return
    schema = json.loads(schema_path.read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    for failure in sorted(validator.iter_errors(raw), key=lambda e: list(map(str, e.path))):
        where = ".".join(str(p) for p in failure.path)
        error(COMPOSE, f"{where}: {failure.message} (compose specification)")


def check_compose(known: dict[str, Known]) -> tuple[int, dict]:
    if not COMPOSE.exists():
        error(COMPOSE, "missing")
        return 0, {}
    raw = load_yaml(COMPOSE)
    if raw is None:
        return 0, {}
    if not isinstance(raw, dict) or not isinstance(raw.get("services"), dict):
        error(COMPOSE, "no `services` mapping")
        return 0, {}
    compose_schema(raw)
    doc = interpolate(raw)
    where = rel(COMPOSE)
    if doc.get("name") != "microchat":
        error(COMPOSE, f"project name is {doc.get('name')!r}, not 'microchat'")
    services: dict = doc["services"]
    envs = {name: environment_of(spec or {}) for name, spec in services.items()}

    def ports_of(host: str):
        if host in SERVICES:
            served = {SERVICES[host].port}
            if envs.get(host, {}).get("METRICS_LISTEN"):
                served.add(port_of(envs[host]["METRICS_LISTEN"]))
            return served
        return INFRA_PORTS.get(host)

    for missing in sorted(set(SERVICES) - set(services)):
        error(COMPOSE, f"no service {missing}")
    one_shots = one_shot_services(services)
    for name, spec in services.items():
        if not isinstance(spec, dict):
            error(COMPOSE, f"service {name} is not a mapping")
            continue
        ctx = f"{where}: services.{name}"
        if "image" not in spec and "build" not in spec:
            error(ctx, "has neither image nor build")
        health = spec.get("healthcheck")
        if name in one_shots:
            if str(spec.get("restart", "no")) != "no":
                error(ctx, f"restart: {spec.get('restart')}: a one-shot that others wait to complete runs once")
        elif not isinstance(health, dict) or health.get("disable") or not health.get("test"):
            error(ctx, "has no healthcheck")
        env = envs[name]
        ours = name in SERVICES
        if ours:
            svc = SERVICES[name]
            build = spec.get("build")
            if not isinstance(build, dict):
                error(ctx, "is not built from deployments/Dockerfile (no build mapping)")
            else:
                context = (COMPOSE.parent / str(build.get("context", "."))).resolve()
                dockerfile = context / str(build.get("dockerfile", "Dockerfile"))
                if not context.is_dir():
                    error(ctx, f"build context {context} does not exist")
                if dockerfile.resolve() != (DEPLOY / "Dockerfile").resolve():
                    error(ctx, f"builds {dockerfile}, not deployments/Dockerfile")
                args = build.get("args") or {}
                if isinstance(args, list):
                    args = dict(a.split("=", 1) for a in args)
                if str(args.get("SERVICE")) != name:
                    error(ctx, f"build arg SERVICE is {args.get('SERVICE')!r}, not {name!r}")
                if str(args.get("PORT")) != str(svc.port):
                    error(ctx, f"build arg PORT is {args.get('PORT')!r}, not {svc.port}")
            # Env names: environment and env_file (or its .example when the file is optional and absent).
            check_env_names(ctx, name, env, known)
            env_files = spec.get("env_file") or []
            for entry in [env_files] if isinstance(env_files, (str, dict)) else env_files:
                path_text = entry.get("path") if isinstance(entry, dict) else entry
                required = entry.get("required", True) if isinstance(entry, dict) else True
                path = COMPOSE.parent / str(path_text)
                example = path.with_name(path.name + ".example")
                if path.exists():
                    check_env_names(f"{ctx} (env_file {rel(path)})", name, dotenv_names(path), known)
                elif example.exists():
                    check_env_names(f"{ctx} (env_file {rel(example)})", name, dotenv_names(example), known)
                elif required:
                    error(ctx, f"env_file {path_text} does not exist")
            # Listen addresses: set, reachable from other containers, on the service's port.
            listen = env.get(svc.listen)
            if not listen:
                error(ctx, f"{svc.listen} is not set (the default binds to 127.0.0.1, unreachable from other containers)")
            else:
                if port_of(listen) != svc.port:
                    error(ctx, f"{svc.listen}={listen}: the port of {name} is {svc.port}")
                if host_of(listen) in LOOPBACK:
                    error(ctx, f"{svc.listen}={listen}: loopback is unreachable from other containers")
            # The dev stack keeps an admin API on the container's loopback (`docker compose exec`).
            admin_listen = env.get(svc.admin.listen) if svc.admin else None
            if admin_listen and host_of(admin_listen) not in LOOPBACK:
                error(ctx, f"{svc.admin.listen}={admin_listen}: the admin API stays on the container's loopback")
            metrics = env.get("METRICS_LISTEN")
            if svc.grpc and not metrics:
                error(ctx, "METRICS_LISTEN is not set (Prometheus and the healthcheck use :9100)")
            if metrics and port_of(metrics) != METRICS_PORT:
                error(ctx, f"METRICS_LISTEN={metrics}: the metrics port is {METRICS_PORT}")
            allowed = ports_of(name)
            for port in spec.get("expose") or []:
                for number in port_range(str(port).split("/")[0]):
                    if number not in allowed:
                        error(ctx, f"exposes {number}, which {name} does not serve ({sorted(allowed)})")
        else:
            allowed = INFRA_PORTS.get(name)
            if "image" not in spec:
                error(ctx, "an infrastructure service needs an image")
        for var, value in env.items():
            check_url(ctx, name, var, value, ports_of)
        for entry in spec.get("ports") or []:
            try:
                host_ip, published, target = compose_ports(entry)
                targets = port_range(target)
            except ValueError:
                error(ctx, f"cannot read ports entry {entry!r}")
                continue
            for number in targets:
                if number in GRPC_PORTS:
                    error(ctx, f"publishes the internal gRPC port {number} to the host")
                if allowed is not None and number not in allowed:
                    error(ctx, f"publishes {number}, which {name} does not serve ({sorted(allowed)})")
            if ours and name not in PUBLIC:
                error(ctx, f"publishes {entry!r}: only {sorted(PUBLIC)} are reached from the host")
            if host_ip not in LOOPBACK:
                error(ctx, f"publishes {entry!r} on every interface; bind it to 127.0.0.1")
        depends = spec.get("depends_on") or {}
        for dep, condition in (depends.items() if isinstance(depends, dict) else ((d, {}) for d in depends)):
            if dep not in services:
                error(ctx, f"depends on {dep}, which is not a service")
            elif (condition or {}).get("condition") == "service_healthy":
                dep_health = (services[dep] or {}).get("healthcheck")
                if not isinstance(dep_health, dict) or not dep_health.get("test"):
                    error(ctx, f"waits for {dep} to be healthy, but {dep} has no healthcheck")
        for volume in spec.get("volumes") or []:
            source = volume.get("source") if isinstance(volume, dict) else str(volume).split(":")[0]
            if source and source.startswith((".", "/")) and not (COMPOSE.parent / source).exists():
                error(ctx, f"mounts {source}, which does not exist")
    check_compose_keys(services, envs, set(doc.get("volumes") or {}), known)
    return len(services), {"services": services, "envs": envs}


def depends_of(spec: dict) -> dict[str, str]:
    """A compose service's depends_on as {service: condition}."""
    depends = spec.get("depends_on") or {}
    if isinstance(depends, dict):
        return {str(d): str((c or {}).get("condition", "service_started")) for d, c in depends.items()}
    return {str(d): "service_started" for d in depends}


def one_shot_services(services: dict) -> set[str]:
    """Services another waits on to complete (`service_completed_successfully`): they exit."""
    return {dep for spec in services.values() if isinstance(spec, dict)
            for dep, condition in depends_of(spec).items() if condition == "service_completed_successfully"}


def compose_mounts(spec: dict) -> list[tuple[str, str, bool]]:
    """(source, target, read_only) of each of a compose service's `volumes` entries."""
    mounts = []
    for volume in spec.get("volumes") or []:
        if isinstance(volume, dict):
            mounts.append((str(volume.get("source", "")), str(volume.get("target", "")),
                           bool(volume.get("read_only"))))
            continue
        parts = str(volume).split(":")
        if len(parts) == 1:
            mounts.append(("", parts[0], False))
        else:
            options = parts[2].split(",") if len(parts) > 2 else []
            mounts.append((parts[0], parts[1], "ro" in options))
    return mounts


def check_compose_keys(services: dict, envs: dict, named: set[str], known: dict[str, Known]) -> None:
    """Every service that signs or checks gRPC calls reads its keys from a volume that a
    one-shot generator wrote before it started; nothing else mounts that volume."""
    where = rel(COMPOSE)
    # Generators: one-shots running `admin service-keys DIR` on the all-in-one's image.
    generators: dict[str, tuple[str, str]] = {}  # volume -> (generator, its mount target)
    for name in sorted(one_shot_services(services)):
        spec = services.get(name) or {}
        command = spec.get("command") or []
        command = command.split() if isinstance(command, str) else [str(c) for c in command]
        if command[:2] != ["admin", "service-keys"]:
            continue
        ctx = f"{where}: services.{name}"
        args = (spec.get("build") or {}).get("args") or {}
        if isinstance(args, list):
            args = dict(a.split("=", 1) for a in args)
        if str(args.get("SERVICE")) != "microchat":
            error(ctx, f"generates service keys with build arg SERVICE={args.get('SERVICE')!r}; "
                       f"`admin service-keys` is the all-in-one's (SERVICE=microchat)")
        directory = command[2] if len(command) > 2 else ""
        mounted = [(source, ro) for source, target, ro in compose_mounts(spec) if target == directory]
        if not mounted or mounted[0][0] not in named:
            error(ctx, f"writes the service keys to {directory or '?'}, which is not a named volume it mounts")
            continue
        if mounted[0][1]:
            error(ctx, f"mounts {mounted[0][0]} read-only, but writes the service keys into it")
        # A fresh named volume takes the owner of the image's directory it is mounted on:
        # without that directory (owned by uid 10001), root owns it and the write fails.
        dockerfile = (DEPLOY / "Dockerfile").read_text() if (DEPLOY / "Dockerfile").exists() else ""
        if not re.search(rf"mkdir\b[^\n]*\s{re.escape(directory)}(\s|$)", dockerfile):
            error(ctx, f"writes to {directory}, which deployments/Dockerfile does not create for uid 10001")
        generators[mounted[0][0]] = (name, directory)
    for name, spec in services.items():
        if not isinstance(spec, dict) or name in {g for g, _ in generators.values()}:
            continue
        ctx = f"{where}: services.{name}"
        key_mounts = {target: (source, ro) for source, target, ro in compose_mounts(spec) if source in generators}
        if name not in KEY_HOLDERS:
            for target, (source, _) in sorted(key_mounts.items()):
                error(ctx, f"mounts the service keys ({source} at {target}), which only the gRPC services need")
            continue
        if KEYS_VAR not in known[name].names:
            error(ctx, f"{name}'s binary does not read {KEYS_VAR} ({known[name].source})")
        directory = envs[name].get(KEYS_VAR)
        if not directory:
            error(ctx, f"{KEYS_VAR} is not set (the default ./data/service-keys is not where the keys are mounted)")
            continue
        if directory not in key_mounts:
            error(ctx, f"{KEYS_VAR}={directory}: no service-keys volume is mounted there "
                       f"(generated by {', '.join(g for g, _ in generators.values()) or 'no one-shot'})")
            continue
        source, read_only = key_mounts[directory]
        if not read_only:
            error(ctx, f"mounts the service keys ({source}) writable; mount them :ro")
        generator = generators[source][0]
        if depends_of(spec).get(generator) != "service_completed_successfully":
            error(ctx, f"does not wait for {generator} (depends_on condition: service_completed_successfully), "
                       f"so it may start before its key exists")
    if not generators and any(n in services for n in KEY_HOLDERS):
        error(COMPOSE, "no one-shot service generates the service keys (`command: [admin, service-keys, DIR]`)")


def check_prometheus(compose: dict) -> int:
    path = DEPLOY / "prometheus" / "prometheus.yml"
    doc = load_yaml(path)
    if doc is None:
        return 0
    if not isinstance(doc, dict) or not isinstance(doc.get("scrape_configs"), list):
        error(path, "no scrape_configs list")
        return 0
    envs = compose.get("envs", {})
    scraped: dict[str, set[int]] = {}
    count = 0
    for job in doc["scrape_configs"]:
        if not isinstance(job, dict) or "job_name" not in job:
            error(path, f"a scrape config without job_name: {job!r}")
            continue
        if job.get("metrics_path", "/metrics") != "/metrics":
            error(path, f"job {job['job_name']}: metrics_path {job['metrics_path']}, the services serve /metrics")
        for static in job.get("static_configs") or []:
            for target in static.get("targets") or []:
                count += 1
                host, port = host_of(target), port_of(target)
                scraped.setdefault(host, set()).add(port)
                if host in SERVICES:
                    svc = SERVICES[host]
                    expected = METRICS_PORT if svc.grpc else svc.port
                    if port != expected:
                        error(path, f"job {job['job_name']}: {target}: {host} serves /metrics on {expected}")
                    if svc.grpc and port_of(envs.get(host, {}).get("METRICS_LISTEN", "")) != METRICS_PORT:
                        error(path, f"job {job['job_name']}: {target}: {host} has no METRICS_LISTEN on {METRICS_PORT} in compose")
    for name in SERVICES:
        if name != "frontend" and name not in scraped:
            error(path, f"does not scrape {name}")
    return count


METRIC_CALL = re.compile(r'metrics::(counter|gauge|histogram)!\(\s*"([a-zA-Z_:][a-zA-Z0-9_:]*)"')
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
                "unless", "offset", "inf", "nan", "le"}


def code_metrics() -> dict[str, str]:
    found: dict[str, str] = {}
    for directory, subdirs, names in os.walk(ROOT):
        subdirs[:] = [d for d in subdirs if d not in ("target", ".tools", "node_modules", ".git", "data")]
        for file in names:
            if file.endswith(".rs"):
                text = (Path(directory) / file).read_text(errors="replace")
                for kind, name in METRIC_CALL.findall(text):
                    found[name] = kind
    return found


def promql_metrics(expr: str) -> set[str]:
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = set()
    for match in re.finditer(r"(?<![\w$.])([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*\()", expr):
        word = match.group(1)
        if word.lower() not in PROMQL_WORDS and not re.fullmatch(r"e\d+", word):
            names.add(word)
    return names


def check_grafana(compose: dict) -> int:
    base = DEPLOY / "grafana"
    sources = load_yaml(base / "provisioning" / "datasources" / "prometheus.yml")
    uids = set()
    if isinstance(sources, dict) and isinstance(sources.get("datasources"), list):
        for source in sources["datasources"]:
            uids.add(source.get("uid"))
            url = urlsplit(str(source.get("url", "")))
            if url.hostname != "prometheus" or url.port != 9090:
                error(base / "provisioning/datasources/prometheus.yml", f"url {source.get('url')}: Prometheus is prometheus:9090")
    elif sources is not None:
        error(base / "provisioning/datasources/prometheus.yml", "no datasources list")
    providers = load_yaml(base / "provisioning" / "dashboards" / "dashboards.yml")
    mounts = {}
    grafana = (compose.get("services") or {}).get("grafana") or {}
    for volume in grafana.get("volumes") or []:
        parts = str(volume).split(":")
        if len(parts) >= 2:
            mounts[parts[1]] = (COMPOSE.parent / parts[0]).resolve()
    if isinstance(providers, dict) and isinstance(providers.get("providers"), list):
        for provider in providers["providers"]:
            path = str((provider.get("options") or {}).get("path", ""))
            if mounts and mounts.get(path) != (base / "dashboards").resolve():
                error(base / "provisioning/dashboards/dashboards.yml",
                      f"provider path {path} is not where compose mounts deployments/grafana/dashboards")
    elif providers is not None:
        error(base / "provisioning/dashboards/dashboards.yml", "no providers list")
    emitted = code_metrics()
    allowed = set()
    for name, kind in emitted.items():
        allowed.add(name)
        if kind == "histogram":
            allowed |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    panels = 0
    used: set[str] = set()
    dashboards = sorted((base / "dashboards").glob("*.json"))
    if not dashboards:
        error(base / "dashboards", "no dashboard")
    for path in dashboards:
        try:
            dash = json.loads(path.read_text())
        except ValueError as failure:
            error(path, f"does not parse as JSON: {failure}")
            continue
        stack = list(dash.get("panels") or [])
        while stack:
            panel = stack.pop()
            stack += panel.get("panels") or []
            if panel.get("type") == "row":
                continue
            panels += 1
            targets = panel.get("targets") or []
            if not targets:
                error(path, f"panel {panel.get('title')!r} has no query")
            for target in targets:
                uid = (target.get("datasource") or panel.get("datasource") or {}).get("uid")
                if uids and uid not in uids:
                    error(path, f"panel {panel.get('title')!r}: datasource {uid!r} is not provisioned")
                for metric in promql_metrics(target.get("expr", "")):
                    used.add(re.sub(r"_(bucket|sum|count)$", "", metric) if metric not in emitted else metric)
                    if metric not in allowed:
                        error(path, f"panel {panel.get('title')!r}: {metric} is not a metric the code emits")
    for metric in sorted(DASHBOARD_METRICS - used):
        error(base / "dashboards", f"no panel shows {metric}")
    for metric in sorted(DASHBOARD_METRICS - set(emitted)):
        error(base / "dashboards", f"{metric} is no longer emitted by the code")
    return panels


# --- Kubernetes -----------------------------------------------------------------------------

def sql_statements(text: str) -> list[str]:
    text = re.sub(r"--[^\n]*", "", text)
    return [" ".join(s.split()) for s in text.split(";") if s.strip()]


def admits_port(rule: dict, port: int) -> bool:
    """Whether a NetworkPolicy ingress rule admits `port`: no `ports` (or an entry without a
    port) admits every port; a named port counts when it is the admin port's name."""
    entries = rule.get("ports") or []
    if not entries:
        return True
    for entry in entries:
        low = entry.get("port")
        if low is None or low == "admin":
            return True
        if isinstance(low, int) and low <= port <= entry.get("endPort", low):
            return True
    return False


def secrets_used(pod: dict) -> set[str]:
    """Every Secret a pod spec reads: volumes (projected too), env and envFrom."""
    used = set()
    for volume in pod.get("volumes") or []:
        if "secret" in volume:
            used.add((volume["secret"] or {}).get("secretName"))
        for source in (volume.get("projected") or {}).get("sources") or []:
            if "secret" in source:
                used.add((source["secret"] or {}).get("name"))
    for container in (pod.get("containers") or []) + (pod.get("initContainers") or []):
        for ref in container.get("envFrom") or []:
            if "secretRef" in ref:
                used.add(ref["secretRef"].get("name"))
        for var in container.get("env") or []:
            ref = (var.get("valueFrom") or {}).get("secretKeyRef")
            if ref:
                used.add(ref.get("name"))
    return {name for name in used if name}


def check_k8s_keys(workloads: dict, by_kind: dict, known: dict[str, Known]) -> None:
    """Each gRPC service's pod mounts its own key Secret read-only where MICROCHAT_SERVICE_KEYS
    points, and no pod reads another service's; the Secrets are made by service-keys.sh,
    never committed."""
    for name, (path, _) in sorted(by_kind.get("Secret", {}).items()):
        if name.startswith(KEYS_SECRET):
            error(path, f"Secret/{name} is committed; deployments/k8s/service-keys.sh creates it from a fresh set")
    if not KEYS_SCRIPT.exists():
        error(KEYS_SCRIPT, "missing (it creates the Secrets microchat-service-keys-<service>)")
    else:
        listed = re.search(r"^services=\(([^)]*)\)", KEYS_SCRIPT.read_text(), re.M)
        if not listed or set(listed.group(1).split()) != set(KEY_HOLDERS):
            error(KEYS_SCRIPT, f"its services=(...) should be {' '.join(KEY_HOLDERS)}")
    for (kind, name), (path, doc) in sorted(workloads.items()):
        ctx = f"{rel(path)}: {kind}/{name}"
        pod = ((doc.get("spec") or {}).get("template") or {}).get("spec") or {}
        own = KEYS_SECRET + name
        for other in sorted(s for s in secrets_used(pod) if s.startswith(KEYS_SECRET) and s != own):
            error(ctx, f"reads the Secret {other}: a pod holds only its own service's key")
        if name not in KEY_HOLDERS:
            if own in secrets_used(pod):
                error(ctx, f"reads the Secret {own}, but {name} does not call or serve gRPC")
            continue
        if KEYS_VAR not in known[name].names:
            error(ctx, f"{name}'s binary does not read {KEYS_VAR} ({known[name].source})")
        volumes = {v.get("name"): v for v in pod.get("volumes") or []}
        container = next((c for c in pod.get("containers") or [] if c.get("name") == name), None)
        if container is None:
            continue  # reported with the container checks
        cctx = f"{ctx}: container {name}"
        directory = next((str(v.get("value")) for v in container.get("env") or []
                          if v.get("name") == KEYS_VAR and "value" in v), None)
        if not directory:
            error(cctx, f"{KEYS_VAR} is not set to the directory its key Secret is mounted at")
            continue
        mount = next((m for m in container.get("volumeMounts") or [] if m.get("mountPath") == directory), None)
        if mount is None:
            error(cctx, f"{KEYS_VAR}={directory}: nothing is mounted there")
            continue
        secret = (volumes.get(mount.get("name")) or {}).get("secret")
        if not secret or secret.get("secretName") != own:
            error(cctx, f"{KEYS_VAR}={directory}: the volume mounted there is not the Secret {own}")
            continue
        if mount.get("readOnly") is not True or mount.get("subPath"):
            error(cctx, f"mounts {own} without readOnly: true (or with a subPath, which never updates)")
        items = {item.get("key") for item in secret.get("items") or []}
        needed = {f"{name}.key"} | {f"{s}.pub" for s in KEY_HOLDERS}
        if items and items != needed:
            error(cctx, f"{own} items {sorted(items)}: a pod needs {name}.key and every .pub")
        mode = secret.get("defaultMode")
        if mode is None or mode & 0o007:
            error(cctx, f"{own}: defaultMode {format(mode, '04o') if mode is not None else 'unset (0644)'} lets every user "
                        f"of the pod read the private key; use 0440 (the pod's fsGroup reads it)")


def check_k8s(known: dict[str, Known]) -> tuple[int, int]:
    kustomization = K8S / "kustomization.yaml"
    kust = load_yaml(kustomization) or {}
    if not isinstance(kust, dict) or not isinstance(kust.get("resources"), list):
        error(kustomization, "no resources list")
        kust = {"resources": []}
    listed = [str(r) for r in kust["resources"]]
    for resource in listed:
        if not (K8S / resource).exists():
            error(kustomization, f"lists {resource}, which does not exist")
    files = sorted(p for p in K8S.glob("*.y*ml") if p.name != "kustomization.yaml")
    for path in files:
        if path.name not in listed:
            error(kustomization, f"does not list {path.name}")
    default_namespace = kust.get("namespace")

    objects = []  # (path, doc)
    for path in files:
        docs = load_yaml(path, multi=True)
        for doc in docs or []:
            if doc is None:
                continue
            if not isinstance(doc, dict):
                error(path, "a document that is not a mapping")
                continue
            name = (doc.get("metadata") or {}).get("name")
            for key in ("apiVersion", "kind"):
                if not doc.get(key):
                    error(path, f"{name or '?'}: no {key}")
            if not name:
                error(path, f"a {doc.get('kind')} without metadata.name")
                continue
            namespace = (doc.get("metadata") or {}).get("namespace") or default_namespace
            if doc.get("kind") not in CLUSTER_SCOPED and namespace != K8S_NAMESPACE:
                error(path, f"{doc['kind']}/{name}: namespace {namespace!r}, not {K8S_NAMESPACE!r}")
            objects.append((path, doc))

    by_kind: dict[str, dict[str, tuple[Path, dict]]] = {}
    for path, doc in objects:
        kinds = by_kind.setdefault(doc.get("kind"), {})
        if doc["metadata"]["name"] in kinds:
            error(path, f"{doc['kind']}/{doc['metadata']['name']} is defined twice")
        kinds[doc["metadata"]["name"]] = (path, doc)
    if "Namespace" not in by_kind or K8S_NAMESPACE not in by_kind["Namespace"]:
        error(K8S, f"no Namespace {K8S_NAMESPACE}")
    configmaps = {n: set((d.get("data") or {}).keys()) for n, (_, d) in by_kind.get("ConfigMap", {}).items()}
    secrets = {n: set((d.get("data") or {}).keys()) | set((d.get("stringData") or {}).keys())
               for n, (_, d) in by_kind.get("Secret", {}).items()}
    secret_values = {n: dict(d.get("stringData") or {}) for n, (_, d) in by_kind.get("Secret", {}).items()}
    services = by_kind.get("Service", {})
    service_ports = {n: {p.get("port") for p in (d.get("spec") or {}).get("ports") or []} for n, (_, d) in services.items()}

    def ports_of(host: str):
        return service_ports.get(host.split(".")[0])

    workloads = {**{("Deployment", n): v for n, v in by_kind.get("Deployment", {}).items()},
                 **{("StatefulSet", n): v for n, v in by_kind.get("StatefulSet", {}).items()}}
    for missing in sorted(set(SERVICES) - {n for (_, n) in workloads}):
        error(K8S, f"no Deployment for {missing}")
    pod_ports: dict[str, tuple[dict, dict]] = {}  # workload name -> (labels, {port name/number -> number})

    for (kind, name), (path, doc) in sorted(workloads.items()):
        ctx = f"{rel(path)}: {kind}/{name}"
        spec = doc.get("spec") or {}
        template = spec.get("template") or {}
        labels = (template.get("metadata") or {}).get("labels") or {}
        selector = (spec.get("selector") or {}).get("matchLabels") or {}
        if not selector or any(labels.get(k) != v for k, v in selector.items()):
            error(ctx, "spec.selector.matchLabels does not match the pod template's labels")
        pod = template.get("spec") or {}
        containers = pod.get("containers") or []
        if not containers:
            error(ctx, "no containers")
            continue
        pod_security = pod.get("securityContext") or {}
        if kind == "StatefulSet":
            if not spec.get("volumeClaimTemplates"):
                error(ctx, "no volumeClaimTemplates")
            headless = services.get(spec.get("serviceName", ""))
            if not headless:
                error(ctx, f"serviceName {spec.get('serviceName')!r} is not a Service")
            elif (headless[1].get("spec") or {}).get("clusterIP") != "None":
                error(ctx, f"serviceName {spec.get('serviceName')} is not a headless Service (clusterIP: None)")
        if name in ("broker", "chat") and int(spec.get("replicas", 1)) < 2:
            error(ctx, f"replicas {spec.get('replicas', 1)}: the design runs several {name} replicas (at least 2)")
        ports: dict = {}
        volumes = {v.get("name") for v in pod.get("volumes") or []} | {
            (v.get("metadata") or {}).get("name") for v in spec.get("volumeClaimTemplates") or []}
        for container in containers:
            cname = container.get("name", "?")
            cctx = f"{ctx}: container {cname}"
            if not container.get("image"):
                error(cctx, "no image")
            for port in container.get("ports") or []:
                ports[port.get("containerPort")] = port.get("containerPort")
                if port.get("name"):
                    ports[port["name"]] = port.get("containerPort")
                if port.get("hostPort"):
                    error(cctx, f"hostPort {port['hostPort']}: nothing is published from a node")
            resources = container.get("resources") or {}
            for section in ("requests", "limits"):
                for resource in ("cpu", "memory"):
                    if not (resources.get(section) or {}).get(resource):
                        error(cctx, f"no resources.{section}.{resource}")
            security = container.get("securityContext") or {}
            if not (security.get("runAsNonRoot", pod_security.get("runAsNonRoot"))):
                error(cctx, "securityContext.runAsNonRoot is not true")
            if security.get("runAsUser", pod_security.get("runAsUser")) == 0:
                error(cctx, "runs as uid 0")
            if security.get("allowPrivilegeEscalation") is not False:
                error(cctx, "securityContext.allowPrivilegeEscalation is not false")
            if "ALL" not in ((security.get("capabilities") or {}).get("drop") or []):
                error(cctx, "securityContext.capabilities.drop lacks ALL")
            for mount in container.get("volumeMounts") or []:
                if mount.get("name") not in volumes:
                    error(cctx, f"mounts volume {mount.get('name')}, which the pod does not define")
            for probe_kind in ("readinessProbe", "livenessProbe", "startupProbe"):
                probe = container.get(probe_kind)
                if probe is None:
                    if probe_kind != "startupProbe":
                        error(cctx, f"no {probe_kind}")
                    continue
                handler = next((probe[h] for h in ("httpGet", "grpc", "tcpSocket") if h in probe), None)
                if handler is None and "exec" not in probe:
                    error(cctx, f"{probe_kind} has no httpGet, grpc, tcpSocket or exec")
                elif handler is not None and handler.get("port") not in ports:
                    error(cctx, f"{probe_kind} probes port {handler.get('port')}, which the container does not declare")
                if "grpc" in probe and name in SERVICES and ports.get(probe["grpc"].get("port")) != SERVICES[name].port:
                    error(cctx, f"{probe_kind}: the gRPC health check is on port {SERVICES[name].port}")
            # Environment: references resolve; for our services, every name is known.
            names, values, from_secrets = [], {}, set()
            for ref in container.get("envFrom") or []:
                prefix = ref.get("prefix", "")
                if "configMapRef" in ref:
                    keys = configmaps.get(ref["configMapRef"].get("name"))
                    if keys is None:
                        error(cctx, f"envFrom ConfigMap {ref['configMapRef'].get('name')} does not exist")
                    names += [prefix + k for k in keys or ()]
                    data = (by_kind["ConfigMap"].get(ref["configMapRef"].get("name"), (None, {}))[1].get("data") or {})
                    values.update({prefix + k: str(v) for k, v in data.items()})
                if "secretRef" in ref:
                    keys = secrets.get(ref["secretRef"].get("name"))
                    if keys is None:
                        error(cctx, f"envFrom Secret {ref['secretRef'].get('name')} does not exist")
                    names += [prefix + k for k in keys or ()]
                    from_secrets |= {prefix + k for k in keys or ()}
            for var in container.get("env") or []:
                names.append(var.get("name"))
                if "value" in var:
                    values[var["name"]] = str(var["value"])
                source = var.get("valueFrom") or {}
                if "configMapKeyRef" in source:
                    ref = source["configMapKeyRef"]
                    if ref.get("key") not in configmaps.get(ref.get("name"), set()):
                        error(cctx, f"{var['name']}: ConfigMap {ref.get('name')} has no key {ref.get('key')}")
                if "secretKeyRef" in source:
                    from_secrets.add(var["name"])
                    ref = source["secretKeyRef"]
                    if ref.get("key") not in secrets.get(ref.get("name"), set()):
                        error(cctx, f"{var['name']}: Secret {ref.get('name')} has no key {ref.get('key')}")
                    else:
                        values[var["name"]] = str(secret_values.get(ref.get("name"), {}).get(ref.get("key"), ""))
            if name in SERVICES and cname == name:
                svc = SERVICES[name]
                if not str(container.get("image", "")).split(":")[0].endswith(f"microchat/{name}"):
                    error(cctx, f"image {container.get('image')} is not microchat/{name}")
                check_env_names(cctx, name, names, known)
                allowed = {svc.port} | ({METRICS_PORT} if values.get("METRICS_LISTEN") else set())
                admin_listen = values.get(svc.admin.listen) if svc.admin else None
                # The admin API stays on the pod's loopback: `kubectl exec` (the CLI) and
                # `kubectl port-forward` reach it there, and no other pod can. Its token,
                # when set, comes from a Secret like every other credential.
                if admin_listen and host_of(admin_listen) not in LOOPBACK:
                    error(cctx, f"{svc.admin.listen}={admin_listen}: the admin API stays on the pod's loopback "
                                f"(kubectl exec and port-forward reach it there)")
                if svc.admin and svc.admin.token in names and svc.admin.token not in from_secrets:
                    error(cctx, f"{svc.admin.token} comes from a Secret, never a literal value")
                for number in {p for p in ports.values()}:
                    if number not in allowed:
                        error(cctx, f"containerPort {number}: {name} serves {sorted(allowed)}")
                if svc.port not in ports.values():
                    error(cctx, f"does not declare containerPort {svc.port}")
                listen = values.get(svc.listen)
                if not listen:
                    error(cctx, f"{svc.listen} is not set (the default binds to 127.0.0.1, unreachable in the pod network)")
                elif port_of(listen) != svc.port or host_of(listen) in LOOPBACK:
                    error(cctx, f"{svc.listen}={listen}: should be 0.0.0.0:{svc.port}")
                metrics = values.get("METRICS_LISTEN")
                if svc.grpc and not metrics:
                    error(cctx, "METRICS_LISTEN is not set (liveness and Prometheus use :9100)")
                if metrics and port_of(metrics) != METRICS_PORT:
                    error(cctx, f"METRICS_LISTEN={metrics}: the metrics port is {METRICS_PORT}")
                own = lambda host, _n=name, _p=set(ports.values()): _p if host == _n else ports_of(host)
                for var, value in values.items():
                    check_url(cctx, name, var, value, own)
            elif name in SERVICES:
                error(cctx, f"the container of {name} should be named {name}")
        pod_ports[name] = (labels, ports)

    check_k8s_keys(workloads, by_kind, known)

    # Services: selectors match a workload, target ports exist, gRPC stays ClusterIP.
    for name, (path, doc) in sorted(services.items()):
        ctx = f"{rel(path)}: Service/{name}"
        spec = doc.get("spec") or {}
        kind = spec.get("type", "ClusterIP")
        selector = spec.get("selector") or {}
        backing = [w for w, (labels, _) in pod_ports.items() if selector and all(labels.get(k) == v for k, v in selector.items())]
        if not backing:
            error(ctx, f"selector {selector} matches no workload")
        if not spec.get("ports"):
            error(ctx, "no ports")
        for port in spec.get("ports") or []:
            target = port.get("targetPort", port.get("port"))
            numbers = {port.get("port"), pod_ports[backing[0]][1].get(target) if backing else None}
            if backing and target not in pod_ports[backing[0]][1]:
                error(ctx, f"targetPort {target} is not a port of {backing[0]}")
            if kind != "ClusterIP" and numbers & set(GRPC_PORTS):
                error(ctx, f"type {kind} exposes the internal gRPC port {port.get('port')}")
            admin = next((SERVICES[b].admin for b in backing if b in SERVICES and SERVICES[b].admin), None)
            if admin and admin.port in numbers:
                error(ctx, f"port {port.get('port')} is {backing[0]}'s admin API, which no Service routes to")
            if port.get("nodePort") and kind == "ClusterIP":
                error(ctx, "nodePort on a ClusterIP Service")
            if backing and backing[0] in SERVICES and port.get("port") != pod_ports[backing[0]][1].get(target):
                error(ctx, f"port {port.get('port')} differs from the container port {pod_ports[backing[0]][1].get(target)} "
                           f"(the services' URLs use the same number)")
        if kind != "ClusterIP" and any(b in SERVICES and b not in PUBLIC for b in backing):
            error(ctx, f"type {kind}: internal services are ClusterIP only")
        if spec.get("externalIPs") and any(b not in PUBLIC for b in backing):
            error(ctx, "externalIPs on an internal service")

    # Ingress: / to the frontend, the API routes to the broker, nothing internal.
    ingresses = by_kind.get("Ingress", {})
    if not ingresses:
        error(K8S, "no Ingress")
    for name, (path, doc) in ingresses.items():
        ctx = f"{rel(path)}: Ingress/{name}"
        annotations = (doc.get("metadata") or {}).get("annotations") or {}
        timeout = annotations.get("nginx.ingress.kubernetes.io/proxy-read-timeout")
        if not timeout or not str(timeout).isdigit() or int(timeout) <= BROKER_WS_IDLE_SECONDS:
            error(ctx, f"nginx.ingress.kubernetes.io/proxy-read-timeout should exceed the broker's WebSocket idle "
                       f"timeout ({BROKER_WS_IDLE_SECONDS}s), is {timeout!r}")
        routes = {}
        for rule in (doc.get("spec") or {}).get("rules") or []:
            for entry in (rule.get("http") or {}).get("paths") or []:
                backend = (entry.get("backend") or {}).get("service") or {}
                target, port = backend.get("name"), backend.get("port") or {}
                routes[entry.get("path")] = target
                if target not in services:
                    error(ctx, f"{entry.get('path')}: Service {target} does not exist")
                    continue
                if target not in PUBLIC:
                    error(ctx, f"{entry.get('path')}: routes to {target}, which is internal (only {sorted(PUBLIC)})")
                number = port.get("number")
                if "name" in port:
                    named = [p.get("port") for p in services[target][1]["spec"].get("ports") or [] if p.get("name") == port["name"]]
                    number = named[0] if named else None
                if number not in service_ports.get(target, set()):
                    error(ctx, f"{entry.get('path')}: Service {target} has no port {port}")
                if number in GRPC_PORTS:
                    error(ctx, f"{entry.get('path')}: exposes the internal gRPC port {number}")
        if routes.get("/") != "frontend":
            error(ctx, "/ does not go to the frontend")
        for route in sorted(BROKER_ROUTES):
            if routes.get(route) != "broker":
                error(ctx, f"{route} does not go to the broker")

    # The cluster's init SQL is the dev stack's.
    init = by_kind.get("ConfigMap", {}).get("postgres-init")
    dev_sql = DEPLOY / "postgres" / "init.sql"
    if not dev_sql.exists():
        error(dev_sql, "missing")
    elif init is None:
        error(K8S, "no ConfigMap postgres-init (the databases of deployments/postgres/init.sql)")
    elif sql_statements((init[1].get("data") or {}).get("init.sql", "")) != sql_statements(dev_sql.read_text()):
        error(init[0], "ConfigMap postgres-init differs from deployments/postgres/init.sql")
    for database in ("auth", "chat", "listener"):
        if dev_sql.exists() and f"create database {database}" not in " ".join(sql_statements(dev_sql.read_text())).lower():
            error(dev_sql, f"does not create the database {database}")

    # The Kubernetes schemas, strictly (unknown fields fail), when kubernetes-validate is installed.
    try:
        import kubernetes_validate
    except ImportError:
        notes.append("kubernetes-validate is not installed: the manifests were not checked against the "
                     "Kubernetes schemas (`.tools/venv/bin/pip install kubernetes-validate` adds that)")
    else:
        version = kubernetes_validate.latest_version()
        for path, doc in objects:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as failure:
                where = ".".join(str(p) for p in failure.path)
                error(path, f"{doc.get('kind')}/{doc['metadata']['name']}: {where}: {failure.message} (Kubernetes {version} schema)")
            except (kubernetes_validate.SchemaNotFoundError, kubernetes_validate.InvalidSchemaError) as failure:
                error(path, f"{doc.get('kind')}/{doc['metadata']['name']}: no schema: {failure}")

    # Internal ports stay internal: a NetworkPolicy admits only pods of the namespace to
    # every workload that is not public, and the public ones (broker, frontend, reached
    # through the Ingress) are the only workloads it leaves out.
    public = {"broker", "frontend"}
    workload_names = {name for (_, name) in workloads}
    guarded: set[str] = set()
    # A public workload may have a policy that keeps its other ports (the broker's ops
    # port) to the namespace, as long as one rule admits its public port from anywhere.
    open_to_all: set[str] = set()
    for name, (path, doc) in by_kind.get("NetworkPolicy", {}).items():
        spec = doc.get("spec") or {}
        if "Ingress" not in (spec.get("policyTypes") or []):
            continue
        selector = spec.get("podSelector") or {}
        covers = set()
        for expression in selector.get("matchExpressions") or []:
            if expression.get("key") == "app.kubernetes.io/name" and expression.get("operator") == "In":
                covers.update(expression.get("values") or [])
        label = (selector.get("matchLabels") or {}).get("app.kubernetes.io/name")
        if label:
            covers.add(label)
        guarded |= covers
        for workload in covers & public:
            if any("from" not in rule and admits_port(rule, SERVICES[workload].port)
                   for rule in (spec.get("ingress") or [])):
                open_to_all.add(workload)
        admins = {SERVICES[w].admin.port for w in covers if w in SERVICES and SERVICES[w].admin}
        for rule in (spec.get("ingress") or []):
            outside = False
            for source in rule.get("from") or []:
                if "ipBlock" in source or source.get("namespaceSelector") == {}:
                    error(path, f"NetworkPolicy/{name}: admits traffic from outside the namespace ({source})")
                outside = outside or "namespaceSelector" in source or "ipBlock" in source
            # Another namespace (monitoring) may scrape metrics, never reach an admin API.
            for port in sorted(admins):
                if outside and admits_port(rule, port):
                    error(path, f"NetworkPolicy/{name}: admits another namespace to the admin API on port {port}")
    for name in sorted(workload_names - public - guarded):
        error(K8S, f"{name}: no NetworkPolicy keeps its ports to the namespace")
    for name in sorted((guarded & public) - open_to_all):
        error(K8S, f"{name} is public (Ingress) but a NetworkPolicy closes it to the namespace")

    # The whole kustomization renders (when kubectl is here; it needs no cluster for that).
    kubectl = shutil.which("kubectl")
    if kubectl:
        done = subprocess.run([kubectl, "kustomize", str(K8S)], capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            error(kustomization, f"kubectl kustomize fails: {done.stderr.strip()[:300]}")
    else:
        notes.append("kubectl is not installed: the kustomization was not rendered")
    return len(objects), len(files)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--build", action="store_true", help="cargo build a missing or stale binary instead of reading its sources")
    parser.add_argument("-v", "--verbose", action="store_true", help="say where each service's variable names came from")
    options = parser.parse_args()

    known = {service: discover(service, options.build) for service in SERVICES}
    check_dockerfile()
    containers, compose = check_compose(known)
    targets = check_prometheus(compose)
    panels = check_grafana(compose)
    manifests, files = check_k8s(known)

    if options.verbose:
        for service, k in known.items():
            print(f"check-deployments: {service}: {len(k.names)} variables from {k.source}")
    for note in notes:
        print(f"check-deployments: note: {note}")
    if errors:
        for problem in errors:
            print(f"check-deployments: {problem}", file=sys.stderr)
        print(f"check-deployments: {len(errors)} problem(s) in deployments/", file=sys.stderr)
        return 1
    print(f"check-deployments: {len(SERVICES)} services, {containers} compose services, "
          f"{manifests} manifests in {files} k8s files, {targets} scrape targets, "
          f"{panels} dashboard panels, all consistent")
    return 0


if __name__ == "__main__":
    sys.exit(main())
