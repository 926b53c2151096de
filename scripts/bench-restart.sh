#!/usr/bin/env bash
# Loads ITEMS x LOCATIONS stock levels (default 100000 x 10 = one million) into a one-node
# release cluster on loopback, stops it (SIGTERM), restarts it, and reports the time until
# it serves a linearizable read and its resident memory then.
#
#   scripts/bench-restart.sh [ITEMS] [LOCATIONS]
#
# By default the restart re-applies the whole load from the Raft log (it is shorter than
# one snapshot interval). SNAPSHOT_FIRST=1 takes a snapshot (POST /snapshot) before the
# stop, so the restart loads the snapshot file instead: the two ends of what a restart does.
# NODE_BIN=path runs that laundry-node build instead of this tree's (for A/B comparisons).
# shellcheck source=scripts/one-node-bench.sh
source "$(dirname "$0")/one-node-bench.sh"
start() {
  "$node_bin" --id 1 --data-dir "$data/node" --client-addr 127.0.0.1:19901 --peer-addr 127.0.0.1:19902 \
    --admin-addr 127.0.0.1:19903 --plaintext --initial-members 1=127.0.0.1:19902/127.0.0.1:19901 \
    --admin-token bench-restart-token >>"$data/node.log" 2>&1 &
  echo $! >"$data/pid"
}
ready() {  # a linearizable read answers (retrying every <= 20 ms, so the time is the node's)
  "$bin/laundry-bench" --endpoints 127.0.0.1:19901 --clients 1 --ops 1 --items 1 --mix read=1 \
    --retry-backoff-max-ms 20 >/dev/null 2>&1
}
start
for _ in $(seq 1 100); do ready && break; sleep 0.1; done
"$bin/laundry-load-levels" --endpoints 127.0.0.1:19901 --items "$items" --locations "$locations"
if [ "${SNAPSHOT_FIRST:-0}" = 1 ]; then
  curl -sf -X POST -H "Authorization: Bearer bench-restart-token" http://127.0.0.1:19903/snapshot >/dev/null
  echo "snapshot taken before the stop: $(du -h "$data/node/snapshot/current.snap" | cut -f1)"
fi
kill -TERM "$(cat "$data/pid")"; while kill -0 "$(cat "$data/pid")" 2>/dev/null; do sleep 0.1; done
echo "on disk: $(du -sh "$data/node" | cut -f1)"
t0=$(date +%s%N)
start
until ready; do
  sleep 0.05
  [ $(( ($(date +%s%N) - t0) / 1000000 )) -lt 60000 ] || { echo "not ready within 60 s" >&2; exit 1; }
done
t1=$(date +%s%N)
rss_kb=$(awk '/VmRSS/ {print $2}' "/proc/$(cat "$data/pid")/status")
hwm_kb=$(awk '/VmHWM/ {print $2}' "/proc/$(cat "$data/pid")/status")
sleep 2
settled_kb=$(awk '/VmRSS/ {print $2}' "/proc/$(cat "$data/pid")/status")
echo "restart to first linearizable read: $(( (t1 - t0) / 1000000 )) ms; resident: $(( rss_kb / 1024 )) MiB then, $(( settled_kb / 1024 )) MiB 2 s later, peak $(( hwm_kb / 1024 )) MiB"
