#!/usr/bin/env bash
# The black-box suite (tests/api) N times in a row against one emulator, to show it does
# not flake: prints one line per run and exits non-zero if any run failed.
# Usage: scripts/repeat-tests.sh [N=10] [extra nextest args]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-10}
shift || true
# shellcheck source=scripts/emulator.sh
. scripts/emulator.sh
emulator_install
trap 'kill "${MOTO_PID:-}" 2>/dev/null || true; wait "${MOTO_PID:-}" 2>/dev/null || true' EXIT
emulator_start .build/moto-repeat.log
export TEST_AWS_ENDPOINT="http://127.0.0.1:$MOTO_PORT"
export TEST_MOTO_SERVER="$PWD/$EMULATOR_VENV/bin/moto_server"
cargo nextest run --workspace --locked --no-run
mkdir -p .build/repeat
failed=0
for i in $(seq 1 "$runs"); do
  log=.build/repeat/run-$i.log
  started=$(date +%s)
  if cargo nextest run --workspace --locked --no-fail-fast --test api "$@" >"$log" 2>&1; then
    outcome=passed
  else
    outcome=FAILED
    failed=$((failed + 1))
  fi
  echo "run $i/$runs: $outcome in $(($(date +%s) - started)) s: $(grep -E '^\s+Summary' "$log" | sed 's/^ *//')"
  grep -E '^\s+FAIL' "$log" | sort -u || true
done
echo "$((runs - failed)) passed, $failed failed"
[ "$failed" -eq 0 ]
