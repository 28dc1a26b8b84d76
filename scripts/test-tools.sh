#!/usr/bin/env bash
# Installs the local peers the test suite runs against, into .tools/ (git-ignored).
# Idempotent: a tool already installed at its pinned version is left alone. Run by
# `make test`; nothing here is ever installed by hand.
set -euo pipefail

cd "$(dirname "$0")/.."
TOOLS="$PWD/.tools"
mkdir -p "$TOOLS"

# npm maildev: an SMTP server whose mails are readable over HTTP (GET /api/email).
MAILDEV_VERSION=3.0.0

# It must also start: an install cut short leaves maildev's own files without all of its
# dependencies (`npm install` again completes it).
maildev_starts() {
    "$TOOLS/node_modules/.bin/maildev" --version >/dev/null 2>&1
}

install_maildev() {
    local installed="$TOOLS/node_modules/maildev/package.json"
    if [[ -f "$installed" ]] && grep -q "\"version\": \"$MAILDEV_VERSION\"" "$installed" \
        && maildev_starts; then
        return
    fi
    if ! command -v npm >/dev/null; then
        echo "test-tools: npm is missing; maildev cannot be installed" >&2
        [[ "${CI:-}" == "true" ]] && exit 1
        return
    fi
    echo "test-tools: installing maildev@$MAILDEV_VERSION into .tools/"
    npm install --prefix "$TOOLS" --no-audit --no-fund --loglevel=error \
        "maildev@$MAILDEV_VERSION" >/dev/null
    if ! maildev_starts; then
        echo "test-tools: maildev was installed but does not start" >&2
        [[ "${CI:-}" == "true" ]] && exit 1
    fi
}

# PyPI SecantusDB: a MongoDB-wire-compatible server (the official Rust driver speaks to
# it), run in memory by the logger's MongoDB tests; in a venv of its own.
SECANTUS_VERSION=0.7.0b3

install_secantus() {
    local venv="$TOOLS/venv"
    if [[ -x "$venv/bin/secantusd-py" ]] \
        && "$venv/bin/python" -m pip show SecantusDB 2>/dev/null | grep -x "Version: $SECANTUS_VERSION" >/dev/null; then
        return
    fi
    if ! command -v python3 >/dev/null; then
        echo "test-tools: python3 is missing; SecantusDB cannot be installed" >&2
        [[ "${CI:-}" == "true" ]] && exit 1
        return
    fi
    echo "test-tools: installing SecantusDB==$SECANTUS_VERSION into .tools/venv"
    if ! { [[ -x "$venv/bin/python" ]] || python3 -m venv "$venv"; } \
        || ! "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
            "SecantusDB==$SECANTUS_VERSION"; then
        echo "test-tools: SecantusDB could not be installed" >&2
        [[ "${CI:-}" == "true" ]] && exit 1
        return
    fi
}

# PyPI PyYAML: read by scripts/check-deployments.py (`make check-deployments`), in the same venv.
PYYAML_VERSION=6.0.3

install_pyyaml() {
    local venv="$TOOLS/venv"
    if [[ -x "$venv/bin/python" ]] \
        && "$venv/bin/python" -c 'import sys, yaml; sys.exit(yaml.__version__ != sys.argv[1])' "$PYYAML_VERSION" 2>/dev/null; then
        return
    fi
    if ! command -v python3 >/dev/null; then
        echo "test-tools: python3 is missing; PyYAML cannot be installed" >&2
        [[ "${CI:-}" == "true" ]] && exit 1
        return
    fi
    echo "test-tools: installing PyYAML==$PYYAML_VERSION into .tools/venv"
    if ! { [[ -x "$venv/bin/python" ]] || python3 -m venv "$venv"; } \
        || ! "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
            "PyYAML==$PYYAML_VERSION"; then
        echo "test-tools: PyYAML could not be installed" >&2
        [[ "${CI:-}" == "true" ]] && exit 1
        return
    fi
}

# PyPI moto in server mode: an S3-compatible server for chat's attachment object store
# tests (the S3 adapter against a real server), in the same venv.
MOTO_VERSION=5.2.5

install_moto() {
    local venv="$TOOLS/venv"
    if [[ -x "$venv/bin/moto_server" ]] \
        && "$venv/bin/python" -m pip show moto 2>/dev/null | grep -x "Version: $MOTO_VERSION" >/dev/null; then
        return
    fi
    if ! command -v python3 >/dev/null; then
        echo "test-tools: python3 is missing; moto cannot be installed" >&2
        [[ "${CI:-}" == "true" ]] && exit 1
        return
    fi
    echo "test-tools: installing moto[server]==$MOTO_VERSION into .tools/venv"
    if ! { [[ -x "$venv/bin/python" ]] || python3 -m venv "$venv"; } \
        || ! "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
            "moto[server]==$MOTO_VERSION"; then
        echo "test-tools: moto could not be installed" >&2
        [[ "${CI:-}" == "true" ]] && exit 1
        return
    fi
}

install_maildev
install_secantus
install_pyyaml
install_moto
