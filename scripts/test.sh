#!/usr/bin/env bash
# The one test command: formatting, lints, and every test in the workspace, against a
# real DynamoDB + SQS emulator (moto server) that this script installs, starts and stops.
# Usage: scripts/test.sh [extra args for the test runner]
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

BUILD=.build
VENV="$BUILD/venv"
REQUIREMENTS=scripts/emulator-requirements.txt

step "emulator: moto server (DynamoDB + SQS)"
# Reinstall only when the pinned requirements change.
if ! cmp -s "$REQUIREMENTS" "$VENV/installed-requirements.txt" 2>/dev/null; then
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$REQUIREMENTS"
  cp "$REQUIREMENTS" "$VENV/installed-requirements.txt"
fi
MOTO_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir -p "$BUILD"
"$VENV/bin/moto_server" -H 127.0.0.1 -p "$MOTO_PORT" >"$BUILD/moto.log" 2>&1 &
MOTO_PID=$!
trap 'kill "$MOTO_PID" 2>/dev/null || true; wait "$MOTO_PID" 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  if curl -fsS -o /dev/null "http://127.0.0.1:$MOTO_PORT/moto-api/" 2>/dev/null; then break; fi
  if ! kill -0 "$MOTO_PID" 2>/dev/null; then cat "$BUILD/moto.log"; echo "moto server died" >&2; exit 1; fi
  sleep 0.1
done
echo "moto server on 127.0.0.1:$MOTO_PORT (pid $MOTO_PID)"
# The tests read these: the shared emulator, and how to start a private one.
export TEST_AWS_ENDPOINT="http://127.0.0.1:$MOTO_PORT"
export TEST_MOTO_SERVER="$PWD/$VENV/bin/moto_server"

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "tests"
if cargo nextest --version >/dev/null 2>&1; then
  # nextest runs each test in its own process and kills hung ones (.config/nextest.toml).
  run_tests() { cargo nextest run --locked --no-fail-fast "$@"; }
else
  run_tests() { cargo test --locked --no-fail-fast "$@"; }
fi
run_tests --workspace "$@"

step "contract tests through a node that owns none of the users (every command forwarded)"
# Each TestNode becomes an owner plus a drained entry node; see tests/api/helpers.rs.
TEST_THROUGH_PEER=1 run_tests --test api "$@" -- streams:: library::
