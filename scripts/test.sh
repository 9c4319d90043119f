#!/usr/bin/env bash
# Runs every test, installing what the tests need on a fresh machine:
#   formatting and lints, Rust unit and integration tests, then the end-to-end suites with the
#   official socket.io-client (node:test) and python-socketio against the release binaries.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt --check, clippy"
cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings

step "release build (binary and examples)"
cargo build --release --bins --examples

step "Rust tests"
cargo test --release

step "installing e2e dependencies (npm, pip)"
(cd e2e && npm ci --no-audit --no-fund)
if [ ! -x .venv/bin/python ]; then python3 -m venv .venv; fi
.venv/bin/pip install --quiet --disable-pip-version-check -r e2e/python/requirements.txt

step "e2e: socket.io-client (node --test)"
node --test --test-concurrency=1 e2e/

step "e2e: python-socketio (pytest)"
.venv/bin/python -m pytest -q e2e/python

step "all tests passed"
