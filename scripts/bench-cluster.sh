#!/usr/bin/env bash
# Measures a release-built 3-node Laundry List cluster on loopback (fsync on) with
# laundry-bench at 1 and 64 clients (or the counts in $CLIENTS) and prints each table; JSON
# goes to $OUT (default target/bench-results). Loopback only; every run is bounded by
# --duration-s.
#
#   scripts/bench-cluster.sh [DURATION_S] [MIX]
#   BENCH_FLAGS=--no-coalesce ...   (extra laundry-bench flags: here, one call per write)
#   CLIENTS="1 64 128 256" ...      (how throughput grows with concurrency: group commit)
set -euo pipefail
cd "$(dirname "$0")/.."
duration="${1:-10}"
mix="${2:-adjust=40,transfer=30,reserve=10,read=15,stale=5}"
out="${OUT:-$PWD/target/bench-results}"
data=$(mktemp -d)
base=19400
export LAUNDRY_DEV_DATA="$data" LAUNDRY_DEV_BASE_PORT=$base LAUNDRY_PROFILE=release
trap 'bash scripts/dev-cluster.sh stop >/dev/null 2>&1 || true; rm -rf "$data"' EXIT

cargo build --quiet --release -p laundry-benches --bin laundry-bench
bash scripts/dev-cluster.sh --detach >/dev/null
mkdir -p "$out"
endpoints="127.0.0.1:$((base + 1)),127.0.0.1:$((base + 2)),127.0.0.1:$((base + 3))"
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -r); data on $(df -h "$data" | awk 'NR==2 {print $1}')"
for clients in ${CLIENTS:-1 64}; do
  echo "$clients clients:"
  "${CARGO_TARGET_DIR:-target}/release/laundry-bench" --endpoints "$endpoints" --clients "$clients" \
    --duration-s "$duration" --mix "$mix" --json "$out/clients-$clients.json" ${BENCH_FLAGS:-}
  echo
done
