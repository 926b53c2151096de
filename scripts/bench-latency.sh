#!/usr/bin/env bash
# Write latency under a fixed offered load: measures the closed-loop peak of single-line
# writes at 64 clients on a fresh release-built 3-node cluster (loopback, fsync on), then
# offers half and a quarter of that peak open loop (`laundry-bench --rate`, each write timed
# from its scheduled start, so queueing behind a stall counts) and prints the percentiles,
# and how many snapshot builds fell inside each run.
# Loopback only; every run is bounded by --duration-s.
#
#   scripts/bench-latency.sh [DURATION_S]
#   BENCH_FLAGS=--no-coalesce ...   (extra laundry-bench flags: here, one call per write)
set -euo pipefail
cd "$(dirname "$0")/.."
duration="${1:-10}"
data=$(mktemp -d)
base=19400
export LAUNDRY_DEV_DATA="$data" LAUNDRY_DEV_BASE_PORT=$base LAUNDRY_PROFILE=release
trap 'bash scripts/dev-cluster.sh stop >/dev/null 2>&1 || true; rm -rf "$data"' EXIT

cargo build --quiet --release -p laundry-benches --bin laundry-bench
bash scripts/dev-cluster.sh --detach >/dev/null
bench="${CARGO_TARGET_DIR:-target}/release/laundry-bench"
endpoints="127.0.0.1:$((base + 1)),127.0.0.1:$((base + 2)),127.0.0.1:$((base + 3))"
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -r)"
"$bench" --endpoints "$endpoints" --clients 64 --duration-s "$duration" --mix adjust=100 ${BENCH_FLAGS:-} \
  --json "$data/peak.json" | tee "$data/peak.txt"
peak=$(awk '$1 == "total" {print $4}' "$data/peak.txt")
# Snapshot builds logged by the nodes so far: a run's tail depends on whether one fell
# inside it (all replicas cross the threshold together), so each run says how many did.
builds() { cat "$data"/node-*.log 2>/dev/null | grep -c 'built snapshot' || true; }
for share in 2 4; do
  rate=$((peak / share))
  echo
  echo "open loop at 1/$share of peak: $rate writes/s"
  before=$(builds)
  "$bench" --endpoints "$endpoints" --clients 64 --duration-s "$duration" --mix adjust=100 --rate "$rate" ${BENCH_FLAGS:-}
  echo "snapshot builds during this run (all nodes): $(($(builds) - before))"
done
