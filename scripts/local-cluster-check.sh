#!/usr/bin/env bash
# cluster/local.sh as an operator uses it: a 2-node cluster, node 2 stopped (it drains)
# and started again. It must come back on the same ports, so that clients pointed at it
# find it, and its log must keep the record of the drain. Uses the emulator at
# TEST_AWS_ENDPOINT (scripts/test.sh's) and the debug build the tests made.
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "local-cluster-check: $*" >&2; exit 1; }
: "${TEST_AWS_ENDPOINT:?the endpoint of the emulator (scripts/test.sh sets it)}"

CLUSTER_DIR=$(mktemp -d)/cluster
export CLUSTER_DIR LOCAL_CLUSTER_BIN=${LOCAL_CLUSTER_BIN:-target/debug/playstate}
[ -x "$LOCAL_CLUSTER_BIN" ] || cargo build --locked --workspace --tests --bins
export PLAYSTATE_STORE__BACKEND=dynamodb PLAYSTATE_STORE__DYNAMODB__CREATE_TABLE=true \
  PLAYSTATE_STORE__DYNAMODB__TABLE="local-check-$$" PLAYSTATE_AWS__ENDPOINT="$TEST_AWS_ENDPOINT" \
  PLAYSTATE_AWS__REGION=us-east-1 PLAYSTATE_AWS__ACCESS_KEY_ID=local \
  PLAYSTATE_AWS__SECRET_ACCESS_KEY=local
trap 'cluster/local.sh down >/dev/null 2>&1 || true' EXIT

cluster/local.sh up 2
# Until node 2 holds its share and nothing moves: a stop while shards are still moving
# to it would have nothing (or only part) to drain.
settled=""
for _ in $(seq 1 300); do
  if cluster/local.sh status --json 2>/dev/null | python3 -c '
import json, sys
s = json.load(sys.stdin)
sys.exit(0 if not s["handoffs"] and s["shards"].get("2", 0) > 0 else 1)'; then
    settled=yes
    break
  fi
  sleep 0.2
done
[ -n "$settled" ] || die "the two nodes did not settle within 60 s"
node2=$CLUSTER_DIR/node2
before=$(cat "$node2/addr") cluster_before=$(cat "$node2/cluster_addr")
cluster/local.sh stop 2
cluster/local.sh start 2
[ "$(cat "$node2/addr")" = "$before" ] || die "node 2 came back on $(cat "$node2/addr"), not $before"
[ "$(cat "$node2/cluster_addr")" = "$cluster_before" ] ||
  die "node 2's cluster listener came back on $(cat "$node2/cluster_addr"), not $cluster_before"
curl -fsS -o /dev/null "http://$before/ready" || die "node 2 does not serve on $before"
runs=$(grep -c '"message":"listening"' "$node2/log")
[ "$runs" -eq 2 ] || die "node 2's log holds $runs runs, not 2: it was truncated"
grep -q '"message":"drained: this node owns no shards"' "$node2/log" ||
  die "node 2's log lost the record of its drain"
cluster/local.sh down
trap - EXIT
echo "local cluster: node 2 restarted on $before (cluster $cluster_before), its log kept both runs"
