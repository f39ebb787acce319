# Sourced by cluster/local.sh, scripts/schemathesis.sh and scripts/observability-check.sh:
# a playstate node started on free loopback ports, waited for until it serves.

# node_wait LOG PID [FROM]: waits until the node writing LOG (process PID) listens, then
# until its /ready answers 200; sets NODE_ADDR and NODE_CLUSTER_ADDR (the addresses it
# chose, from its "listening" line). FROM is the byte of LOG this run's lines start at (a
# log appended to over several runs holds older "listening" lines). Fails, with the log's
# tail, if the node exits, does not listen within 30 s or is not ready within 60 s.
node_wait() {
  local log=$1 pid=$2 from=${3:-0} line=""
  for _ in $(seq 1 300); do
    line=$(tail -c +$((from + 1)) "$log" 2>/dev/null | grep -m1 '"message":"listening"' || true)
    [ -n "$line" ] && break
    kill -0 "$pid" 2>/dev/null || { tail -5 "$log" >&2; echo "the node exited (see $log)" >&2; return 1; }
    sleep 0.1
  done
  [ -n "$line" ] || { echo "the node did not listen within 30 s (see $log)" >&2; return 1; }
  NODE_ADDR=$(sed -E 's/.*"addr":"([^"]+)".*/\1/' <<<"$line")
  NODE_CLUSTER_ADDR=$(sed -E 's/.*"cluster_addr":"([^"]+)".*/\1/' <<<"$line")
  for _ in $(seq 1 600); do
    curl -fsS -o /dev/null "http://$NODE_ADDR/ready" 2>/dev/null && return 0
    kill -0 "$pid" 2>/dev/null || { tail -5 "$log" >&2; echo "the node exited (see $log)" >&2; return 1; }
    sleep 0.1
  done
  echo "the node was not ready within 60 s (see $log)" >&2
  return 1
}
