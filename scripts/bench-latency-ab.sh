#!/usr/bin/env bash
# Compares the write latency of two laundry-node binaries under a fixed offered load, by
# interleaved runs: each round starts a fresh 3-node cluster on loopback with binary A,
# loads it LOAD_S (default 10) s closed loop at 64 clients (so a snapshot is due inside the
# measured window, as in bench-latency.sh; a longer load makes the state, and so each
# build, larger), then measures DURATION_S open loop at RATE writes/s, and does the
# same with B. Prints each run's percentiles, the host's steal time during it (a busy host
# shows here, not in the figures) and the nodes' `build_cpu_ms` for snapshot builds, and
# the disk writes during the open-loop phase, sampled every 100 ms from the data
# directory's block device (/sys/class/block/DEV/stat): the mean MB/s and the largest
# 100 ms burst.
# Loopback only; every run is bounded by its duration.
#
#   scripts/bench-latency-ab.sh A_BIN B_BIN [ROUNDS=4] [RATE=4000] [DURATION_S=10]
#
#   LOAD_S=60 scripts/bench-latency-ab.sh ...   (builds of ~100 MB, as in bench-latency.sh 60)
#
# Extra environment (e.g. LAUNDRY_SNAPSHOT_LOGS) is passed to both builds' nodes.
set -euo pipefail
cd "$(dirname "$0")/.."
load_s="${LOAD_S:-10}"
a_bin="$(realpath "${1:?usage: bench-latency-ab.sh A_BIN B_BIN [ROUNDS] [RATE] [DURATION_S]}")"
b_bin="$(realpath "${2:?usage: bench-latency-ab.sh A_BIN B_BIN [ROUNDS] [RATE] [DURATION_S]}")"
rounds="${3:-4}"
rate="${4:-4000}"
duration="${5:-10}"
base=19700
data=$(mktemp -d)
pids=()
stop_nodes() {
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  sleep 0.5 # the ports free up before the next cluster binds them
  pids=()
}
trap 'stop_nodes; rm -rf "$data"' EXIT

cargo build --quiet --release -p laundry-benches --bin laundry-bench
bench="${CARGO_TARGET_DIR:-target}/release/laundry-bench"
endpoints="127.0.0.1:$((base + 1)),127.0.0.1:$((base + 2)),127.0.0.1:$((base + 3))"
members=""
for id in 1 2 3; do
  members="${members:+$members,}$id=127.0.0.1:$((base + 100 + id))/127.0.0.1:$((base + id))/127.0.0.1:$((base + 200 + id))"
done
steal() { awk '/^cpu / {print $9}' /proc/stat; }
disk_dev=$(basename "$(df --output=source "$data" | tail -1)")
disk_stat="/sys/class/block/$disk_dev/stat"
sample_disk() { # sample_disk OUT SECONDS: sectors written, every 100 ms, bounded by SECONDS
  local n=$(( $2 * 10 + 20 ))
  for _ in $(seq 1 "$n"); do
    [ -r "$disk_stat" ] && awk '{print $7}' "$disk_stat" >>"$1"
    sleep 0.1
  done
}
disk_summary() { # disk_summary FILE: "mean M MB/s, burst B MB/100 ms"
  awk 'NR > 1 { d = ($1 - prev) * 512 / 1e6; sum += d; n++; if (d > max) max = d } { prev = $1 }
       END { if (n) printf "%.1f MB/s, burst %.1f MB/100 ms", sum / n * 10, max; else print "not sampled" }' "$1"
}

run() { # run LABEL BIN
  rm -rf "$data/cluster"
  mkdir -p "$data/cluster"
  for id in 1 2 3; do
    "$2" --id "$id" --data-dir "$data/cluster/node-$id" --client-addr "127.0.0.1:$((base + id))" \
      --peer-addr "127.0.0.1:$((base + 100 + id))" --admin-addr "127.0.0.1:$((base + 200 + id))" \
      --plaintext --initial-members "$members" >"$data/cluster/node-$id.log" 2>&1 &
    pids+=($!)
    disown
  done
  local ready=0
  for _ in $(seq 1 100); do
    if "$bench" --endpoints "$endpoints" --clients 1 --ops 1 --items 1 --mix read=1 >/dev/null 2>&1; then
      ready=1
      break
    fi
    sleep 0.2
  done
  [ "$ready" = 1 ] || { echo "$1: the cluster did not answer within 20 s" >&2; exit 1; }
  local s0 s1 peak line cpu
  s0=$(steal)
  peak=$("$bench" --endpoints "$endpoints" --clients 64 --duration-s "$load_s" --mix adjust=100 | awk '$1 == "total" {print $4}')
  rm -f "$data/disk"
  sample_disk "$data/disk" "$duration" &
  local sampler=$!
  line=$("$bench" --endpoints "$endpoints" --clients 64 --duration-s "$duration" --mix adjust=100 \
    --rate "$rate" | awk '$1 == "total" {print "p50", $5, "p90", $6, "p99", $7, "p99.9", $8, "max", $9}')
  kill "$sampler" 2>/dev/null || true
  wait "$sampler" 2>/dev/null || true
  s1=$(steal)
  cpu=$(cat "$data"/cluster/node-*.log | sed 's/\x1b\[[0-9;]*m//g' | grep -o 'build_cpu_ms=[0-9]*' | cut -d= -f2 | tr '\n' ' ' || true)
  stop_nodes
  echo "$1  peak $peak/s  at $rate/s: $line ms  steal $((s1 - s0)) ticks  disk $(disk_summary "$data/disk")  build_cpu_ms: ${cpu:-none logged}"
}

echo "machine: $(nproc) cores; A = $a_bin; B = $b_bin"
for r in $(seq 1 "$rounds"); do
  run "round $r A" "$a_bin"
  run "round $r B" "$b_bin"
done
