#!/usr/bin/env bash
# The one test command: formatting, lints, and every test in the workspace.
# Usage: scripts/test.sh [extra args for the test runner]
# Installs what it needs itself; safe to run on a fresh machine of this kind.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "tests"
if cargo nextest --version >/dev/null 2>&1; then
  # nextest runs each test in its own process and kills hung ones (.config/nextest.toml).
  cargo nextest run --workspace --locked --no-fail-fast "$@"
else
  cargo test --workspace --locked --no-fail-fast "$@"
fi
