#!/usr/bin/env bash
# Checks cluster/prometheus and cluster/grafana with the real tools:
#   1. promtool check config (both scrape configs), check rules, test rules (alerts_test.yml);
#      the dashboard JSON is what cluster/grafana/dashboard.py writes;
#   2. a real Prometheus (1 s scrapes) over a 3-node loopback cluster (debug build, one
#      DynamoDB table on the moto emulator, trailers onboarded through a fake TMDB) under a
#      short players load plus the requests the panels need (a refusal, 4xx, trailer
#      lookups, watchlist writes); after two scrapes past the load, every dashboard query
#      and every alert expression goes through /api/v1/query: none may fail and every
#      panel query must return data. Prints a table; exits non-zero on any failure.
# Runs alone (starts its own moto unless TEST_AWS_ENDPOINT is set) and as a step of
# scripts/test.sh. Installs Debian's prometheus package when promtool is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/emulator.sh
. scripts/emulator.sh
# shellcheck source=scripts/node.sh
. scripts/node.sh

WORK=$(mktemp -d /tmp/playstate-observability.XXXXXX)
PIDS=()
NODE_PIDS=()
cleanup() {
  local pid
  # SIGKILL for the nodes: SIGTERM would drain each one's shards to the others first,
  # which takes long and proves nothing here (their data dirs are thrown away).
  for pid in "${NODE_PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${NODE_PIDS[@]}" "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
started() { PIDS+=("$1"); }

say() { printf -- '--- [%3ds] %s\n' "$SECONDS" "$*"; }
die() { echo "observability-check: $*" >&2; exit 1; }
# Polls CMD every 0.1 s for up to $1 seconds.
wait_for() {
  local seconds=$1; shift
  for _ in $(seq 1 $((seconds * 10))); do "$@" && return 0; sleep 0.1; done
  return 1
}

if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null; then
  say "installing Debian's prometheus package"
  # The package's service must not start: policy-rc.d says no to every invoke-rc.d.
  own_policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    own_policy=1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  [ -n "$own_policy" ] && rm -f /usr/sbin/policy-rc.d
fi
emulator_install
PY="$EMULATOR_VENV/bin/python"
HELPER=scripts/observability_check.py

say "promtool: configs, rules, rule unit tests; the dashboard JSON"
promtool check config cluster/prometheus/prometheus.yml
"$PY" "$HELPER" k8s-config cluster/prometheus/prometheus-k8s.yml "$WORK/prometheus-k8s.yml"
cp cluster/prometheus/alerts.yml "$WORK/"
if promtool check config cluster/prometheus/prometheus-k8s.yml 2>"$WORK/k8s-check.err"; then
  :
elif grep -q 'field kubernetes_sd_configs not found' "$WORK/k8s-check.err"; then
  echo "(this promtool has no Kubernetes discovery: prometheus-k8s.yml checked with static targets in its place)"
  promtool check config "$WORK/prometheus-k8s.yml"
else
  cat "$WORK/k8s-check.err" >&2; die "prometheus-k8s.yml is invalid"
fi
promtool check rules cluster/prometheus/alerts.yml
promtool test rules cluster/prometheus/alerts_test.yml
"$PY" cluster/grafana/dashboard.py --check
echo "cluster/grafana/playstate.json is up to date"

say "building the node and the load generator (debug)"
# The whole workspace at once: building one package alone unifies dependency features
# differently and rebuilds them.
cargo build --quiet --locked --workspace --tests --bins
BIN=target/debug/playstate

if [ -z "${TEST_AWS_ENDPOINT:-}" ]; then
  emulator_start "$WORK/moto.log"
  started "$MOTO_PID"
  TEST_AWS_ENDPOINT="http://127.0.0.1:$MOTO_PORT"
fi

"$PY" "$HELPER" upstream "$WORK/upstream.port" &
started $!
wait_for 10 test -s "$WORK/upstream.port" || die "the fake TMDB did not start"
UPSTREAM="http://127.0.0.1:$(cat "$WORK/upstream.port")"

suffix=$(date +%s)-$$
cat >"$WORK/node.toml" <<EOF
[store]
backend = "dynamodb"
[store.dynamodb]
table = "observability-$suffix"
create_table = true
[aws]
endpoint = "$TEST_AWS_ENDPOINT"
region = "us-east-1"
access_key_id = "test"
secret_access_key = "test"
[progress]
# Flushes (and so store writes) within the short run.
flush_interval = "2s"
[trailers]
tmdb_token = "check-token"
tmdb_base_url = "$UPSTREAM"
content_url_prefix = "$UPSTREAM/pc-se/film/"
poll_wait = "1s"
request_timeout = "2s"
# Refreshes within the short run.
refresh_after = "2s"
[trailers.queue]
queue_name = "observability-new-content-$suffix"
create_queue = true
[dev]
endpoints = true
[log]
requests = "errors"
EOF

# Starts node K (joining through $2 when given); sets ADDR_K and CLUSTER_K.
start_node() {
  local k=$1 join=${2:-} log="$WORK/node$1.log"
  local args=(--config "$WORK/node.toml" --node-id "$k" --listen 127.0.0.1:0
    --cluster-listen 127.0.0.1:0 --data-dir "$WORK/node$k")
  [ -n "$join" ] && args+=(--join "$join")
  "$BIN" "${args[@]}" >"$log" 2>&1 &
  NODE_PIDS+=($!)
  node_wait "$log" "$!" || die "node $k did not start"
  printf -v "ADDR_$k" '%s' "$NODE_ADDR"
  printf -v "CLUSTER_$k" '%s' "$NODE_CLUSTER_ADDR"
  echo "node $k: players http://$NODE_ADDR"
}

say "a 3-node cluster on loopback"
start_node 1
start_node 2 "$CLUSTER_1"
start_node 3 "$CLUSTER_1"
NODES=("$ADDR_1" "$ADDR_2" "$ADDR_3")
# Balanced: every node owns shards and none is moving (requests for a moving shard wait).
settled() {
  local addr metrics
  for addr in "${NODES[@]}"; do
    metrics=$(curl -fs "http://$addr/metrics") || return 1
    grep -q '^playstate_cluster_shards_moving 0$' <<<"$metrics" || return 1
    grep -Eq '^playstate_cluster_shards_owned [1-9]' <<<"$metrics" || return 1
  done
}
wait_for 60 settled || die "the shards did not settle over the three nodes"

say "Prometheus scraping it every second"
printf '[{"targets":["%s","%s","%s"]}]\n' "${NODES[@]}" >"$WORK/targets.json"
"$PY" "$HELPER" prometheus-config cluster/prometheus/prometheus.yml "$WORK/prometheus.yml" "$WORK/targets.json"
promtool check config "$WORK/prometheus.yml" >/dev/null
PROM_PORT=$(free_port)
PROM="http://127.0.0.1:$PROM_PORT"
prometheus --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/tsdb" \
  --web.listen-address="127.0.0.1:$PROM_PORT" >"$WORK/prometheus.log" 2>&1 &
started $!
wait_for 30 curl -fs -o /dev/null "$PROM/-/ready" || { tail -5 "$WORK/prometheus.log"; die "Prometheus did not start"; }
echo "Prometheus on $PROM"

# An unsigned JWT for user $1 (the nodes only decode tokens: no auth.* configured).
b64url() { base64 -w0 | tr '+/' '-_' | tr -d '='; }
token() { echo "$(printf '{"alg":"none"}' | b64url).$(printf '{"sub":"%s"}' "$1" | b64url)."; }
# METHOD NODE PATH [USER [BODY]]: prints the status.
call() {
  local args=(-s -o /dev/null -w '%{http_code}' -X "$1" "http://$2$3")
  [ -n "${4:-}" ] && args+=(-H "Authorization: Bearer $(token "$4")")
  [ -n "${5:-}" ] && args+=(-H 'content-type: application/json' -d "$5")
  curl "${args[@]}"
}
expect() { [ "$1" = "$2" ] || die "$3: got $1, wanted $2"; }

say "trailer onboarding through the fake TMDB"
content="$UPSTREAM/pc-se/film/observability-check"
expect "$(call POST "$ADDR_1" /non-production/utils/publish "" "{\"url\":\"$content\"}")" 200 "publish"
trailer_found() { [ "$(curl -s -o /dev/null -w '%{http_code}' "http://$ADDR_2/api/v1/trailer/?url=$content")" = 200 ]; }
wait_for 30 trailer_found || die "the published content was not onboarded"

say "a players load on the three nodes (10 s), and the requests the panels need"
target/debug/loadtest players --quiet --threads 1 --connections 12 --duration 10s \
  --viewers 300 --speedup 4 --id-prefix "obs-$suffix" \
  --target "http://$ADDR_1" --target "http://$ADDR_2" --target "http://$ADDR_3" >"$WORK/load.txt" &
load=$!
started $load
user="obs-$suffix-limit"
for s in 1 2 3; do expect "$(call PUT "$ADDR_2" "/v1/streams/s$s" "$user" '{"streamId":"x"}')" 200 "stream $s"; done
expect "$(call PUT "$ADDR_3" /v1/streams/s4 "$user" '{"streamId":"x"}')" 429 "a 4th stream (refused)"
expect "$(call DELETE "$ADDR_1" /v1/streams/s1 "$user")" 204 "stopping a stream"
asset=3fa85f64-5717-4562-b3fc-2c963f66afa6
expect "$(call PUT "$ADDR_1" "/v1/watchlist/$asset" "$user")" 200 "a watchlist write"
expect "$(call PUT "$ADDR_3" "/v1/progress/$asset" "$user" '{"progress":42}')" 200 "a progress write"
expect "$(call GET "$ADDR_3" "/api/v1/trailer/?url=$content")" 200 "a trailer hit"
expect "$(call GET "$ADDR_1" "/api/v1/trailer/?url=$UPSTREAM/pc-se/film/unknown")" 404 "a trailer miss"
expect "$(call GET "$ADDR_2" "/api/v1/trailer/?url=nonsense")" 400 "an invalid trailer URL"
wait "$load" || die "the load failed: $(cat "$WORK/load.txt")"
echo "load: $(head -1 "$WORK/load.txt")"
load_ended=$(date +%s.%N)

say "two scrapes after the load, then every query"
"$PY" "$HELPER" wait-scrapes "$PROM" "$load_ended" 2
"$PY" "$HELPER" check "$PROM" cluster/grafana/playstate.json cluster/prometheus/alerts.yml playstate-local

say "node 3 killed: the alert conditions for it hold on the real series, then the failover clears one"
kill -KILL "${NODE_PIDS[2]}"
"$PY" "$HELPER" expect-condition "$PROM" cluster/prometheus/alerts.yml holds \
  PlaystateShardsWithoutLiveOwner PlaystateNodeDown PlaystateMembersMissing
"$PY" "$HELPER" expect-condition "$PROM" cluster/prometheus/alerts.yml clears \
  PlaystateShardsWithoutLiveOwner
say "done"
