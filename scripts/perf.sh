#!/usr/bin/env bash
# Reproduces the figures of README "Performance" on this machine: one node, embedded
# store, the load generator on the same machine. About 9 minutes. Writes every report
# (text and --json) under ${OUT:-target/perf}.
#
#   scripts/perf.sh            # everything
#   scripts/perf.sh heartbeat  # one part: baseline | heartbeat | players | writebehind
#   scripts/perf.sh dynamodb   # not in "everything": needs npm (installs dynalite)
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-target/perf}
PORT=${PORT:-18080}
BASELINE_PORT=${BASELINE_PORT:-18090}
mkdir -p "$OUT"

cargo build --release --locked -p playstate -p loadtest --bins --example baseline >&2
BIN=target/release

server_pid=""
stop_server() {
    if [[ -n "$server_pid" ]]; then
        kill -INT "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
        server_pid=""
    fi
}
trap stop_server EXIT

# start_node LABEL [ENV=VALUE ...]: a fresh node with its own data dir.
start_node() {
    local label=$1
    shift
    rm -rf "$OUT/data-$label"
    env "$@" "$BIN/playstate" --listen "127.0.0.1:$PORT" --data-dir "$OUT/data-$label" \
        >"$OUT/$label.server.log" 2>&1 &
    server_pid=$!
    for _ in $(seq 100); do
        curl -sf "http://127.0.0.1:$PORT/health" >/dev/null && return 0
        sleep 0.1
    done
    echo "node did not start; see $OUT/$label.server.log" >&2
    exit 1
}

# load LABEL SCENARIO [ARGS...]: one loadtest run against the running server.
load() {
    local label=$1 scenario=$2
    shift 2
    echo "== $label" | tee "$OUT/$label.txt"
    "$BIN/loadtest" "$scenario" --quiet --server-pid "$server_pid" \
        --json "$OUT/$label.json" "$@" | tee -a "$OUT/$label.txt"
}

metrics() {
    curl -s "http://127.0.0.1:$PORT/metrics" >"$OUT/$1.metrics"
}

baseline() {
    "$BIN/examples/baseline" "127.0.0.1:$BASELINE_PORT" >/dev/null 2>&1 &
    server_pid=$!
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$BASELINE_PORT") 2>/dev/null && break
        sleep 0.1
    done
    for conns in 32 128; do
        load "baseline-c$conns" heartbeat --target "http://127.0.0.1:$BASELINE_PORT" \
            --duration 20s --connections "$conns"
    done
    kill "$server_pid"
    wait "$server_pid" 2>/dev/null || true
    server_pid=""
}

heartbeat() {
    for conns in 32 128; do
        start_node "heartbeat-c$conns"
        load "heartbeat-c$conns" heartbeat --target "http://127.0.0.1:$PORT" \
            --duration 20s --connections "$conns"
        metrics "heartbeat-c$conns"
        stop_server
    done
    start_node heartbeat-contract
    load heartbeat-contract heartbeat --contract heartbeat \
        --target "http://127.0.0.1:$PORT" --duration 20s
    stop_server
}

# 200k viewers at a speed-up of 0.15 offer what 30k viewers offer in real time; every
# interval of the node is stretched by the same factor, so leases and write-behind
# behave as they would at 20 s heartbeats and a 30 s flush.
players() {
    start_node players PLAYSTATE_STREAMS__HEARTBEAT_INTERVAL=134s \
        PLAYSTATE_PROGRESS__FLUSH_INTERVAL=200s
    local args=(--target "http://127.0.0.1:$PORT" --viewers 200000 --speedup 0.15
        --connections 128)
    # The first pass starts every viewer; the second runs the same viewers warmed.
    load players-warmup players "${args[@]}" --duration 140s
    load players players "${args[@]}" --duration 60s
    metrics players
    stop_server
}

# Real time: 5 s progress cadence, 60 s flush interval; writes per update from /metrics.
writebehind() {
    start_node writebehind PLAYSTATE_PROGRESS__FLUSH_INTERVAL=60s
    load writebehind players --target "http://127.0.0.1:$PORT" --viewers 10000 \
        --duration 150s --no-watchlist
    metrics writebehind
    stop_server
    local updates writes
    updates=$(awk '/^playstate_progress_updates_total /{print $2}' "$OUT/writebehind.metrics")
    writes=$(awk '/^playstate_store_writes_total\{op="progress_put"\}/{print $2}' \
        "$OUT/writebehind.metrics")
    echo "progress updates $updates, store writes $writes" | tee -a "$OUT/writebehind.txt"
    awk -v u="$updates" -v w="$writes" \
        'BEGIN { printf "one store write per %.1f progress updates\n", u / w }' |
        tee -a "$OUT/writebehind.txt"
}

# The DynamoDB adapter against dynalite (npm; in memory, far faster than moto): the
# write-behind run again, through BatchWriteItem over HTTP.
dynamodb() {
    local dir=.build/dynalite dyn_port=${DYNALITE_PORT:-14567} dyn_pid
    if [[ ! -x $dir/node_modules/.bin/dynalite ]]; then
        mkdir -p "$dir"
        npm install --prefix "$dir" --no-audit --no-fund dynalite@3.2.2 >&2
    fi
    "$dir/node_modules/.bin/dynalite" --port "$dyn_port" >"$OUT/dynalite.log" 2>&1 &
    dyn_pid=$!
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$dyn_port") 2>/dev/null && break
        sleep 0.1
    done
    start_node dynamodb PLAYSTATE_STORE__BACKEND=dynamodb \
        PLAYSTATE_STORE__DYNAMODB__CREATE_TABLE=true \
        PLAYSTATE_AWS__ENDPOINT="http://127.0.0.1:$dyn_port" \
        PLAYSTATE_AWS__ACCESS_KEY_ID=test PLAYSTATE_AWS__SECRET_ACCESS_KEY=test \
        PLAYSTATE_PROGRESS__FLUSH_INTERVAL=60s
    load dynamodb players --target "http://127.0.0.1:$PORT" --viewers 10000 \
        --duration 150s
    metrics dynamodb
    stop_server
    kill "$dyn_pid"
    wait "$dyn_pid" 2>/dev/null || true
}

parts=("$@")
[[ ${#parts[@]} -eq 0 ]] && parts=(baseline heartbeat players writebehind)
for part in "${parts[@]}"; do
    case $part in
    baseline | heartbeat | players | writebehind | dynamodb) "$part" ;;
    *)
        echo "unknown part: $part (baseline | heartbeat | players | writebehind | dynamodb)" >&2
        exit 2
        ;;
    esac
done
echo "reports in $OUT" >&2
