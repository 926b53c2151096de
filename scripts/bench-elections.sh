#!/usr/bin/env bash
# Spurious elections under load: a release 3-node cluster on loopback with the election
# timers from the environment (LAUNDRY_HEARTBEAT_MS, LAUNDRY_ELECTION_MIN_MS,
# LAUNDRY_ELECTION_MAX_MS; the node's defaults otherwise), saturated by laundry-bench at
# 64 clients for DURATION_S; prints the Raft term before and after. Any term change with
# no node killed is an election nobody asked for. Loopback only, bounded by DURATION_S.
#
#   scripts/bench-elections.sh [DURATION_S]
set -euo pipefail
cd "$(dirname "$0")/.."
duration="${1:-60}"
data=$(mktemp -d)
base=19800
export LAUNDRY_DEV_DATA="$data" LAUNDRY_DEV_BASE_PORT=$base LAUNDRY_PROFILE=release
trap 'bash scripts/dev-cluster.sh stop >/dev/null 2>&1 || true; rm -rf "$data"' EXIT
cargo build --quiet --release -p laundry-benches --bin laundry-bench
bash scripts/dev-cluster.sh --detach >/dev/null
endpoints="127.0.0.1:$((base + 1)),127.0.0.1:$((base + 2)),127.0.0.1:$((base + 3))"
terms() {
  for p in 1 2 3; do
    python3 -c 'import json,sys,urllib.request; print(json.load(urllib.request.urlopen(sys.argv[1], timeout=5))["term"])' \
      "http://127.0.0.1:$((base + 200 + p))/cluster"
  done | sort -u | tr '\n' ' '
}
before=$(terms)
"${CARGO_TARGET_DIR:-target}/release/laundry-bench" --endpoints "$endpoints" --clients 64 \
  --duration-s "$duration" --mix adjust=100 | tail -3
after=$(terms)
echo "terms before: $before after: $after (heartbeat ${LAUNDRY_HEARTBEAT_MS:-default} ms, election ${LAUNDRY_ELECTION_MIN_MS:-default}-${LAUNDRY_ELECTION_MAX_MS:-default} ms, ${duration} s at 64 clients)"
[ "$before" = "$after" ] && echo "no elections under load" || echo "ELECTIONS HAPPENED under load"
