#!/usr/bin/env bash
# The memory a snapshot build takes: loads ITEMS x LOCATIONS stock levels (default
# 100000 x 10 = one million) into a one-node release cluster on loopback, with the
# operation-count trigger out of the way, then asks for two snapshot builds
# (POST /snapshot), a few writes apart, and prints the node's resident memory before and
# the peak (VmHWM, reset before each build) during each, and the nodes' build log lines
# (copied_ms is the time the state lock was held). The second build is the steady case.
#
#   scripts/bench-build-memory.sh [ITEMS] [LOCATIONS]
#
# NODE_BIN=path runs that laundry-node build instead of this tree's (for A/B comparisons).
# Loopback only; every step is bounded.
# shellcheck source=scripts/one-node-bench.sh
source "$(dirname "$0")/one-node-bench.sh"
LAUNDRY_SNAPSHOT_OPS=1000000000 "$node_bin" --id 1 --data-dir "$data/node" \
  --client-addr 127.0.0.1:19911 --peer-addr 127.0.0.1:19912 --admin-addr 127.0.0.1:19913 \
  --plaintext --initial-members 1=127.0.0.1:19912/127.0.0.1:19911 \
  --admin-token bench-build-memory-token >>"$data/node.log" 2>&1 &
echo $! >"$data/pid"
pid=$(cat "$data/pid")
ready() {
  "$bin/laundry-bench" --endpoints 127.0.0.1:19911 --clients 1 --ops 1 --items 1 --mix read=1 >/dev/null 2>&1
}
for _ in $(seq 1 100); do ready && break; sleep 0.1; done
"$bin/laundry-load-levels" --endpoints 127.0.0.1:19911 --items "$items" --locations "$locations"
mib() { awk -v k="$1:" '$1 == k {print int($2 / 1024)}' "/proc/$pid/status"; }
sleep 2
echo "before the builds: resident $(mib VmRSS) MiB"
for n in 1 2; do
  "$bin/laundry-bench" --endpoints 127.0.0.1:19911 --clients 4 --ops 100 --items 10 --mix adjust=1 >/dev/null
  echo 5 >"/proc/$pid/clear_refs" # resets VmHWM to the current resident size
  curl -sf -X POST -H "Authorization: Bearer bench-build-memory-token" \
    http://127.0.0.1:19913/snapshot >/dev/null || { echo "build $n: POST /snapshot refused" >&2; exit 1; }
  for _ in $(seq 1 300); do # the build's log line, within 30 s
    [ "$(grep -c "built snapshot" "$data/node.log" || true)" -ge "$n" ] && break
    sleep 0.1
  done
  echo "build $n: peak $(mib VmHWM) MiB, resident after $(mib VmRSS) MiB"
done
sed 's/\x1b\[[0-9;]*m//g' "$data/node.log" | grep "built snapshot" | grep -o "bytes=.*" | tail -2
