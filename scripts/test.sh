#!/usr/bin/env bash
# The one test command: formatting, lints, and every test in the workspace, against a
# real DynamoDB + SQS emulator (moto server) that this script installs, starts and stops.
# Usage: scripts/test.sh [extra args for the test runner]
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

# shellcheck source=scripts/emulator.sh
. scripts/emulator.sh

step "emulator: moto server (DynamoDB + SQS)"
emulator_install
trap 'kill "${MOTO_PID:-}" 2>/dev/null || true; wait "${MOTO_PID:-}" 2>/dev/null || true' EXIT
emulator_start .build/moto.log
echo "moto server on 127.0.0.1:$MOTO_PORT (pid $MOTO_PID)"
# The tests read these: the shared emulator, and how to start a private one.
export TEST_AWS_ENDPOINT="http://127.0.0.1:$MOTO_PORT"
export TEST_MOTO_SERVER="$PWD/$EMULATOR_VENV/bin/moto_server"

step "build (debug, the whole workspace with its tests: the feature set every later step uses, so dependencies are built once)"
cargo build --quiet --locked --workspace --tests --bins

step "Kubernetes manifests (cluster/k8s): schemas, entrypoint script, node configuration"
K8S_OUT=.build/k8s
mkdir -p "$K8S_OUT"
"$EMULATOR_VENV/bin/kubernetes-validate" --strict --quiet \
  cluster/k8s/configmap.yaml cluster/k8s/secret.yaml cluster/k8s/services.yaml \
  cluster/k8s/statefulset.yaml cluster/k8s/pdb.yaml
"$EMULATOR_VENV/bin/python" - "$K8S_OUT" <<'PY'
import sys, yaml
data = yaml.safe_load(open("cluster/k8s/configmap.yaml"))["data"]
for name in ("entrypoint.sh", "playstate.toml"):
    open(f"{sys.argv[1]}/{name}", "w").write(data[name])
PY
sh -n "$K8S_OUT/entrypoint.sh"
# The node configuration as a pod gets it (the statefulset sets the two secrets, the
# entrypoint the id and the advertised address).
PLAYSTATE_CLUSTER__SECRET=check PLAYSTATE_AUTH__JWT_HS256_SECRET=check \
  PLAYSTATE_CLUSTER__NODE_ID=1 PLAYSTATE_CLUSTER__ADVERTISE=playstate-0.playstate-cluster \
  "${CARGO_TARGET_DIR:-target}/debug/playstate" --config "$K8S_OUT/playstate.toml" check-config >/dev/null
echo "manifests, entrypoint and configuration are valid"

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

step "cluster/local.sh: a node stopped and started again comes back on its ports, its log kept"
scripts/local-cluster-check.sh

step "schemathesis: every operation of docs/openapi.json, on one node and through a node that owns none of the users"
scripts/schemathesis.sh all

step "Prometheus and Grafana: promtool checks and rule tests, then a real Prometheus over a loaded 3-node cluster"
# Installs Debian's prometheus package when promtool is missing; uses the moto above.
scripts/observability-check.sh
