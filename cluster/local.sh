#!/usr/bin/env bash
# A playstate cluster on this machine, for trying things out: every node on loopback,
# free ports, its own data dir and log under .cluster/nodeK/, one shared secret.
#
#   cluster/local.sh up N      start nodes 1..N (node 1 starts the cluster, the others join)
#   cluster/local.sh add       start one more node that joins
#   cluster/local.sh stop K    SIGTERM node K (it drains: its shards go to the others)
#   cluster/local.sh start K   start node K again on its data dir and ports (it rejoins;
#                              its log is appended to)
#   cluster/local.sh leave K   drain node K and remove it from the cluster (it exits)
#   cluster/local.sh status    `playstate cluster status` through the first live node
#   cluster/local.sh down      SIGTERM every node and wait for them
#
# Members must share one users' store. By default the nodes use a DynamoDB emulator (moto
# server, installed into .build/venv like scripts/test.sh does) that `up` starts and `down`
# stops; set PLAYSTATE_STORE__BACKEND=dynamodb (and the table and AWS settings) to use a
# real one instead.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/emulator.sh
. scripts/emulator.sh
# shellcheck source=scripts/node.sh
. scripts/node.sh

# CLUSTER_DIR keeps another cluster apart (e.g. for scripts/perf-cluster.sh).
DIR=${CLUSTER_DIR:-.cluster}
# LOCAL_CLUSTER_BIN picks another build (e.g. target/debug/playstate).
BIN=${LOCAL_CLUSTER_BIN:-target/release/playstate}

die() { echo "local.sh: $*" >&2; exit 1; }

build() {
  [ -x "$BIN" ] || cargo build --release --locked
}

secret() {
  mkdir -p "$DIR"
  [ -s "$DIR/secret" ] || head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$DIR/secret"
  cat "$DIR/secret"
}

# The store every node is started with: the caller's, or a moto server of this cluster's.
store_env() {
  if [ -n "${PLAYSTATE_STORE__BACKEND:-}" ]; then return; fi
  if ! { [ -f "$DIR/moto/pid" ] && kill -0 "$(cat "$DIR/moto/pid")" 2>/dev/null; }; then
    emulator_install
    emulator_start "$DIR/moto/log"
    echo "$MOTO_PID" >"$DIR/moto/pid"
    echo "$MOTO_PORT" >"$DIR/moto/port"
    echo "DynamoDB emulator (moto) on 127.0.0.1:$MOTO_PORT"
  fi
  export PLAYSTATE_STORE__BACKEND=dynamodb PLAYSTATE_STORE__DYNAMODB__TABLE=playstate \
    PLAYSTATE_STORE__DYNAMODB__CREATE_TABLE=true \
    PLAYSTATE_AWS__ENDPOINT="http://127.0.0.1:$(cat "$DIR/moto/port")" \
    PLAYSTATE_AWS__REGION=us-east-1 PLAYSTATE_AWS__ACCESS_KEY_ID=local \
    PLAYSTATE_AWS__SECRET_ACCESS_KEY=local
}

stop_emulator() {
  [ -f "$DIR/moto/pid" ] || return 0
  kill "$(cat "$DIR/moto/pid")" 2>/dev/null || true
  rm -f "$DIR/moto/pid"
}

alive() { [ -f "$DIR/node$1/pid" ] && kill -0 "$(cat "$DIR/node$1/pid")" 2>/dev/null; }

nodes() { for d in "$DIR"/node*; do [ -d "$d" ] && basename "$d" | sed 's/node//'; done | sort -n; }

first_live() {
  for k in $(nodes); do
    if alive "$k"; then echo "$k"; return; fi
  done
  die "no node is running"
}

# Starts node K; with JOIN, through that cluster address. Waits for /ready.
start_node() {
  local k=$1 join=${2:-} node="$DIR/node$1"
  alive "$k" && die "node $k is already running"
  mkdir -p "$node"
  # A node started before comes back on its ports, so that the clients and load pointed
  # at it find it again.
  local listen=127.0.0.1:0 cluster_listen=127.0.0.1:0
  if [ -s "$node/addr" ] && [ -s "$node/cluster_addr" ]; then
    listen=$(cat "$node/addr") cluster_listen=$(cat "$node/cluster_addr")
  fi
  local args=(--node-id "$k" --listen "$listen" --cluster-listen "$cluster_listen" --data-dir "$node/data")
  [ -n "$join" ] && args+=(--join "$join")
  store_env
  # Appended to, so that the record of earlier runs (a drain, a crash) stays.
  local from=0
  [ -f "$node/log" ] && from=$(stat -c %s "$node/log")
  PLAYSTATE_CLUSTER__SECRET=$(secret) nohup "$BIN" "${args[@]}" >>"$node/log" 2>&1 &
  echo $! >"$node/pid"
  node_wait "$node/log" "$(cat "$node/pid")" "$from" || die "node $k did not start"
  echo "$NODE_ADDR" >"$node/addr"
  echo "$NODE_CLUSTER_ADDR" >"$node/cluster_addr"
  echo "node $k ready: players http://$NODE_ADDR, cluster $NODE_CLUSTER_ADDR"
}

stop_node() {
  local k=$1
  alive "$k" || return 0
  local pid; pid=$(cat "$DIR/node$k/pid")
  kill -TERM "$pid"
  for _ in $(seq 1 1200); do kill -0 "$pid" 2>/dev/null || { echo "node $k stopped"; return; }; sleep 0.1; done
  die "node $k still running after 120 s"
}

cmd=${1:-}
case "$cmd" in
  up)
    n=${2:-3}
    build
    start_node 1
    for k in $(seq 2 "$n"); do start_node "$k" "$(cat "$DIR/node1/cluster_addr")"; done
    ;;
  add)
    build
    last=$(nodes | tail -1)
    via=$(first_live)
    start_node $((last + 1)) "$(cat "$DIR/node$via/cluster_addr")"
    ;;
  start) start_node "${2:?node number}" ;;
  stop) stop_node "${2:?node number}" ;;
  leave)
    via=$(first_live)
    PLAYSTATE_CLUSTER__SECRET=$(secret) "$BIN" cluster leave --node-id "${2:?node number}" \
      --cluster-addr "$(cat "$DIR/node$via/cluster_addr")"
    ;;
  status)
    via=$(first_live)
    PLAYSTATE_CLUSTER__SECRET=$(secret) "$BIN" cluster status \
      --cluster-addr "$(cat "$DIR/node$via/cluster_addr")" "${@:2}"
    ;;
  down)
    for k in $(nodes | sort -rn); do stop_node "$k"; done
    stop_emulator
    ;;
  *) sed -n '2,18p' "$0"; exit 2 ;;
esac
