#!/usr/bin/env bash
# Writes the scrape targets of the cluster/local.sh nodes for prometheus.yml (job
# playstate-local): one target per node directory, labelled with its node number.
#   cluster/prometheus/local-targets.sh      (CLUSTER_DIR as for local.sh; default .cluster)
set -euo pipefail
cd "$(dirname "$0")/../.."
DIR=${CLUSTER_DIR:-.cluster}
out="$DIR/prometheus-targets.json"
entries=()
for addr_file in "$DIR"/node*/addr; do
  [ -s "$addr_file" ] || continue
  node=$(basename "$(dirname "$addr_file")" | sed 's/^node//')
  entries+=("{\"targets\":[\"$(cat "$addr_file")\"],\"labels\":{\"node\":\"$node\"}}")
done
[ ${#entries[@]} -gt 0 ] || { echo "local-targets.sh: no node under $DIR (cluster/local.sh up first)" >&2; exit 1; }
(IFS=,; echo "[${entries[*]}]") >"$out.new"
mv "$out.new" "$out"
echo "wrote ${#entries[@]} targets to $out"
