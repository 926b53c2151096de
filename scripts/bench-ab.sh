#!/usr/bin/env bash
# Compares two laundry-node binaries by interleaved runs: each round starts a fresh release
# 3-node cluster on loopback with binary A, loads it with laundry-bench, then the same with
# B. Prints writes/s, p99 and the three nodes' CPU time per 1 000 operations (from
# /proc/<pid>/stat), steadier than writes/s on a machine whose cores the load generator
# shares. Loopback only; every run is bounded by its duration.
#
#   scripts/bench-ab.sh A_BIN B_BIN [ROUNDS=3] [DURATION_S=10] [MIX=adjust=100] [CLIENTS=64]
#
# A_FLAGS / B_FLAGS: extra laundry-bench flags for each variant's load, e.g. one binary
# against itself, coalesced writes against one call per write:
#   B_FLAGS=--no-coalesce scripts/bench-ab.sh target/release/laundry-node target/release/laundry-node
#
# Build each variant with `cargo build --release -p laundry-node` and copy
# target/release/laundry-node aside before building the next.
set -euo pipefail
cd "$(dirname "$0")/.."
a_bin="$(realpath "${1:?usage: bench-ab.sh A_BIN B_BIN [ROUNDS] [DURATION_S] [MIX] [CLIENTS]}")"
b_bin="$(realpath "${2:?usage: bench-ab.sh A_BIN B_BIN [ROUNDS] [DURATION_S] [MIX] [CLIENTS]}")"
rounds="${3:-3}"
duration="${4:-10}"
mix="${5:-adjust=100}"
clients="${6:-64}"
base=19500
data=$(mktemp -d)
bins=$(mktemp -d)
export LAUNDRY_DEV_DATA="$data/cluster" LAUNDRY_DEV_BASE_PORT=$base LAUNDRY_PROFILE=release
trap 'bash scripts/dev-cluster.sh stop >/dev/null 2>&1 || true; rm -rf "$data" "$bins"' EXIT

cargo build --quiet --release -p laundry-node -p laundry-client -p laundry-api -p laundry-benches --bins
target="${CARGO_TARGET_DIR:-$PWD/target}/release"
# dev-cluster.sh runs $target/laundry-node; keep this tree's build to put back at the end.
cp "$target/laundry-node" "$bins/own"
cp "$a_bin" "$bins/A"
cp "$b_bin" "$bins/B"
trap 'bash scripts/dev-cluster.sh stop >/dev/null 2>&1 || true; cp "$bins/own" "$target/laundry-node"; rm -rf "$data" "$bins"' EXIT
endpoints="127.0.0.1:$((base + 1)),127.0.0.1:$((base + 2)),127.0.0.1:$((base + 3))"
ticks=$(getconf CLK_TCK)
node_ticks() {
  local sum=0
  for id in 1 2 3; do
    sum=$((sum + $(awk '{print $14 + $15}' "/proc/$(cat "$data/cluster/node-$id.pid")/stat")))
  done
  echo "$sum"
}

echo "A: $a_bin ${A_FLAGS:-}"
echo "B: $b_bin ${B_FLAGS:-}"
for round in $(seq 1 "$rounds"); do
  for v in A B; do
    bash scripts/dev-cluster.sh stop >/dev/null 2>&1 || true
    rm -rf "$data/cluster"
    cp "$bins/$v" "$target/laundry-node"
    bash scripts/dev-cluster.sh --detach >/dev/null
    before=$(node_ticks)
    flags_var="${v}_FLAGS"
    total=$("$target/laundry-bench" --endpoints "$endpoints" --clients "$clients" \
      --duration-s "$duration" --mix "$mix" ${!flags_var:-} | grep '^total')
    after=$(node_ticks)
    ops=$(echo "$total" | awk '{print $2}')
    cpu_ms=$(((after - before) * 1000 / ticks))
    echo "round $round $v: $(echo "$total" | awk '{print $4}') ops/s, p99 $(echo "$total" | awk '{print $7}') ms," \
      "node CPU $((cpu_ms * 1000 / (ops > 0 ? ops : 1))) ms per 1 000 ops"
  done
done
