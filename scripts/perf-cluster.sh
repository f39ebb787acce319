#!/usr/bin/env bash
# Reproduces README "Performance" › "Cluster": heartbeat throughput and node CPU per
# request through 3 nodes against 1, a join and a drain under a `players` load, and a
# kill -9 of a follower and of the leader under a `players` load (failover).
# Release builds; every node and the load generator share this machine. Reports land in
# ${OUT:-target/perf-cluster}.
#
#   scripts/perf-cluster.sh              # everything (about 5 minutes)
#   scripts/perf-cluster.sh heartbeat    # one part: heartbeat | join | drain |
#                                        #   crash-follower | crash-leader
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-target/perf-cluster}
mkdir -p "$OUT"
export CLUSTER_DIR="$OUT/cluster"
cargo build --release --locked -p playstate -p loadtest --bins >&2
BIN=target/release
LOCAL=cluster/local.sh

trap '$LOCAL down >/dev/null 2>&1 || true' EXIT

fresh() {
  $LOCAL down >/dev/null 2>&1 || true
  rm -rf "$CLUSTER_DIR"
  $LOCAL up "$1" >&2
}
# --target for every live node but ${SPARE:-none}: players are not sent to a node that is
# about to stop, as a load balancer would take it out first.
targets() { for d in "$CLUSTER_DIR"/node*; do [ "$d" = "$CLUSTER_DIR/node${SPARE:-}" ] && continue; [ -f "$d/pid" ] && kill -0 "$(cat "$d/pid")" 2>/dev/null && printf -- '--target http://%s ' "$(cat "$d/addr")"; done; }
pids() { for d in "$CLUSTER_DIR"/node*; do [ -f "$d/pid" ] && kill -0 "$(cat "$d/pid")" 2>/dev/null && printf -- '--server-pid %s ' "$(cat "$d/pid")"; done; }
metric_sum() {
  local name=$1 total=0
  for d in "$CLUSTER_DIR"/node*; do
    [ -f "$d/addr" ] || continue
    v=$(curl -s "http://$(cat "$d/addr")/metrics" 2>/dev/null | awk -v n="$name" '$1 == n { print $2 }')
    total=$(python3 -c "print($total + ${v:-0})")
  done
  echo "$total"
}
load() {
  local label=$1 scenario=$2
  shift 2
  echo "== $label" | tee "$OUT/$label.txt"
  # shellcheck disable=SC2046
  "$BIN/loadtest" "$scenario" --quiet $(targets) $(pids) --json "$OUT/$label.json" "$@" \
    | tee -a "$OUT/$label.txt"
}

heartbeat() {
  for n in 1 3; do
    fresh "$n"
    load "heartbeat-$n-nodes" heartbeat --users 100000 --connections 32 --duration 20s
  done
}

# A players load on the running nodes for 70 s; `change` happens 20 s in. ${VIEWERS}
# viewers: the nodes share a DynamoDB emulator (moto, one Python process), which keeps up
# with about 1,000 (500 requests/s) on this machine, far below what the nodes could serve.
under_players_load() {
  local label=$1 change=$2
  load "$label" players --viewers "${VIEWERS:-1000}" --connections 32 --duration 70s &
  local loader=$!
  sleep 20
  local started; started=$(date +%s.%N)
  eval "$change" >&2
  local took; took=$(python3 -c "import time; print(round(time.time() - $started, 2))")
  wait "$loader"
  {
    echo "change: $change, done in ${took} s (including waiting for a settled table)"
    echo "shards moved (sum over nodes): $(metric_sum playstate_handoff_shards_moved_total)"
    echo "requests that waited for a handoff: $(metric_sum playstate_handoff_waited_requests_total)"
    echo "forwarded commands by outcome: ok $(metric_sum 'playstate_forwarded_commands_total{outcome="ok"}'), moved $(metric_sum 'playstate_forwarded_commands_total{outcome="moved"}'), unavailable $(metric_sum 'playstate_forwarded_commands_total{outcome="unavailable"}'), error $(metric_sum 'playstate_forwarded_commands_total{outcome="error"}')"
    grep -h '"shards handed over"' "$CLUSTER_DIR"/node*/log | sed -E 's/.*"shards":([0-9]+).*"elapsed_ms":([0-9]+).*/  batch: \1 shards in \2 ms/' | sort | uniq -c | sort -rn | head -5
    $LOCAL status
  } | tee -a "$OUT/$label.txt"
}

settled() {
  for _ in $(seq 1 600); do
    $LOCAL status --json | python3 -c '
import json, sys
s = json.load(sys.stdin)
counts = [s["shards"].get(str(m["id"]), 0) for m in s["members"]]
ok = not s["handoffs"] and all(m["state"] == "active" for m in s["members"]) and max(counts) - min(counts) <= 1
sys.exit(0 if ok else 1)' && return 0
    sleep 0.1
  done
  return 1
}

join() {
  fresh 2
  under_players_load join-2-to-3 "$LOCAL add && settled"
}

drain() {
  fresh 3
  SPARE=2 under_players_load drain-and-restart "$LOCAL stop 2 && $LOCAL start 2 && settled"
}

cluster_json() { $LOCAL status --json; }

# Waits until the cluster has a leader other than node $1 and node $1 owns no shard;
# prints when each happened, in seconds after the call.
failed_over() {
  local victim=$1 started; started=$(date +%s.%N)
  local leader_at=""
  for _ in $(seq 1 1200); do
    local s; s=$(cluster_json 2>/dev/null) || { sleep 0.05; continue; }
    local now; now=$(python3 -c "import time; print(round(time.time() - $started, 2))")
    if [ -z "$leader_at" ] && python3 -c 'import json,sys; s=json.loads(sys.argv[1]); sys.exit(0 if s["leader"] not in (None, int(sys.argv[2])) else 1)' "$s" "$victim"; then
      leader_at=$now
    fi
    if [ -n "$leader_at" ] && python3 -c 'import json,sys; s=json.loads(sys.argv[1]); sys.exit(0 if s["shards"].get(sys.argv[2], 0) == 0 else 1)' "$s" "$victim"; then
      echo "a leader other than node $victim after ${leader_at} s; its shards moved after ${now} s"
      return 0
    fi
    sleep 0.05
  done
  return 1
}

# The dip in a players run's timeline: which seconds had errors, and of what kind.
dip() {
  python3 - "$1" <<'PY'
import json, sys
t = json.load(open(sys.argv[1]))["timeline"]
first, last = t["first_error_second"], t["last_error_second"]
total = t["total"]
kinds = {k: v for k, v in total.items() if k not in ("requests", "ok") and v}
print(f"requests {total['requests']}, errors {total['requests'] - total['ok']} by kind {kinds}")
if first is None:
    print("no errors")
else:
    print(f"errors from second {first} to second {last}: a dip of {last - first + 1} s")
    for s in t["seconds"][max(first - 1, 0): last + 2]:
        print(f"  second {s['second']:>3}: {s['requests']:>6} requests, {s['status_503']:>5} 503, "
              f"{s['requests'] - s['ok'] - s['status_503']:>3} other errors, p99 {s['p99_us']} us")
PY
}

# kill -9 of one of three nodes ($1: follower or leader) 20 s into a players load on the
# two others (players of a dead node would be sent elsewhere by a load balancer).
crash() {
  local which=$1
  fresh 3
  local leader; leader=$(cluster_json | python3 -c 'import json,sys; print(json.load(sys.stdin)["leader"])')
  local victim=$leader
  [ "$which" = follower ] && victim=$((leader % 3 + 1))
  SPARE=$victim under_players_load "crash-$which" \
    "kill -9 \$(cat $CLUSTER_DIR/node$victim/pid) && failed_over $victim"
  dip "$OUT/crash-$which.json" | tee -a "$OUT/crash-$which.txt"
}
crash-follower() { crash follower; }
crash-leader() { crash leader; }

parts=("$@")
[ ${#parts[@]} -gt 0 ] || parts=(heartbeat join drain crash-follower crash-leader)
for part in "${parts[@]}"; do "$part"; done
echo "reports in $OUT" >&2
