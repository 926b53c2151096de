#!/usr/bin/env bash
# Side by side on this machine: a 3-member etcd (Debian's etcd-server; installed when
# missing) and a 3-node Laundry List, both on loopback with fsync on, the same load
# generator, concurrency and duration. Workloads: blind single-line write (etcd Put vs
# Laundry Adjust +1) and conditional decrement (etcd read + compare-and-swap on the mod
# revision vs Laundry Adjust -1, which checks stock in the state machine), and linearizable
# single-key read (etcd Range at the default linearizable consistency vs Laundry GetStock at
# linearizable consistency; both confirm leadership with a quorum, batched).
# The Laundry client sends concurrent writes together (one WriteMany call per group, each
# write answered on its own); etcd's Go client and this generator's etcd mode send one
# call per write, so each Laundry write row is followed by the same with --no-coalesce.
#
#   scripts/bench-vs-etcd.sh [DURATION_S] [CLIENTS]
set -euo pipefail
cd "$(dirname "$0")/.."
duration="${1:-10}"
clients="${2:-64}"
command -v etcd >/dev/null || { export DEBIAN_FRONTEND=noninteractive; apt-get update -q >/dev/null; apt-get install -y -q etcd-server >/dev/null; }
cargo build --quiet --release -p laundry-benches --bin laundry-bench
bench="${CARGO_TARGET_DIR:-target}/release/laundry-bench"
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  LAUNDRY_DEV_DATA="$work/laundry" bash scripts/dev-cluster.sh stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

cluster="e1=http://127.0.0.1:23801,e2=http://127.0.0.1:23802,e3=http://127.0.0.1:23803"
for i in 1 2 3; do
  etcd --name "e$i" --data-dir "$work/e$i" \
    --listen-client-urls "http://127.0.0.1:2379$i" --advertise-client-urls "http://127.0.0.1:2379$i" \
    --listen-peer-urls "http://127.0.0.1:2380$i" --initial-advertise-peer-urls "http://127.0.0.1:2380$i" \
    --initial-cluster "$cluster" --initial-cluster-state new --initial-cluster-token laundry-bench \
    >"$work/e$i.log" 2>&1 &
  pids+=($!)
done
LAUNDRY_DEV_DATA="$work/laundry" LAUNDRY_DEV_BASE_PORT=19400 LAUNDRY_PROFILE=release bash scripts/dev-cluster.sh --detach >/dev/null
etcd_eps=127.0.0.1:23791,127.0.0.1:23792,127.0.0.1:23793
ll_eps=127.0.0.1:19401,127.0.0.1:19402,127.0.0.1:19403
# Wait (bounded) for etcd to elect a leader: a write must succeed.
for _ in $(seq 1 100); do "$bench" --target etcd --endpoints "$etcd_eps" --clients 1 --ops 1 --items 1 --mix put=1 >/dev/null 2>&1 && break; sleep 0.2; done

row() {  # target endpoints mix label [generator flags]
  "$bench" --target "$1" --endpoints "$2" --clients "$clients" --duration-s "$duration" --mix "$3" --json "$work/r.json" ${5:-} >/dev/null
  python3 - "$work/r.json" "$1" "$4" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
t = [r for r in d["rows"] if r["op"] == "total"][0]
print(f"{sys.argv[3]:<34} {sys.argv[2]:<8} {t['ops_per_s']:>9.0f} {t['p50_ms']:>8.2f} {t['p99_ms']:>8.2f} {t['errors']:>7}")
PY
}
echo "$(nproc) cores; $clients clients; ${duration}s per row; fsync on; 3 members each on loopback"
printf '%-34s %-8s %9s %8s %8s %7s\n' workload target "ops/s" "p50 ms" "p99 ms" errors
row etcd "$etcd_eps" put=100 "blind single-line write"
row laundry "$ll_eps" put=100 "blind single-line write"
row laundry "$ll_eps" put=100 "  same, one call per write" --no-coalesce
row etcd "$etcd_eps" adjust=100 "conditional decrement"
row laundry "$ll_eps" adjust=100 "conditional decrement"
row laundry "$ll_eps" adjust=100 "  same, one call per write" --no-coalesce
row etcd "$etcd_eps" read=100 "linearizable read"
row laundry "$ll_eps" read=100 "linearizable read"
