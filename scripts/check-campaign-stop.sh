#!/usr/bin/env bash
# A fault campaign stopped from outside (SIGTERM, as a CI timeout or an operator sends it)
# must take its cluster with it: no laundry-node left running, no network namespace, veth
# or bridge left behind. Starts a short register campaign, waits until its three nodes
# run, sends SIGTERM, and checks. Needs root (namespaces) and a built laundry-jepsen and
# laundry-node (debug). Bounded: at most ~30 s of waiting in all.
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${CARGO_TARGET_DIR:-target}/debug/laundry-jepsen"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$bin" register --duration-s 60 --nodes 3 --nemesis kill,pause,partition --period-s 4 \
  --results "$work/run" >"$work/log" 2>&1 &
pid=$!
tag=$((pid % 100000))
nodes() { pgrep -f -- "laundry-node .*$work/run" | wc -l; }
leftovers() { ip -o link show | grep -cE "llbr$tag:|llv${tag}[hp][0-9]" || true; }
spaces() { ip netns list | grep -c "^ll${tag}n" || true; }

for _ in $(seq 1 100); do
  [ "$(nodes)" -ge 3 ] && break
  sleep 0.2
done
if [ "$(nodes)" -lt 3 ]; then
  echo "check-campaign-stop: the campaign's nodes did not start" >&2
  cat "$work/log" >&2
  kill -TERM "$pid" 2>/dev/null || true
  exit 1
fi
echo "campaign $pid running: $(nodes) nodes, $(spaces) namespaces; sending SIGTERM"
kill -TERM "$pid"
rc=0
for _ in $(seq 1 100); do
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.2
done
if kill -0 "$pid" 2>/dev/null; then
  echo "check-campaign-stop: the campaign did not exit within 20 s of SIGTERM" >&2
  kill -KILL "$pid"
  rc=1
fi
wait "$pid" || true
left_nodes=$(nodes) left_spaces=$(spaces) left_links=$(leftovers)
echo "after: $left_nodes nodes, $left_spaces namespaces, $left_links links; $(tail -1 "$work/log")"
if [ "$left_nodes" -ne 0 ] || [ "$left_spaces" -ne 0 ] || [ "$left_links" -ne 0 ]; then
  echo "check-campaign-stop: FAIL: the stopped campaign left its cluster behind" >&2
  pkill -KILL -f -- "laundry-node .*$work/run" || true
  for ns in $(ip netns list | awk '{print $1}' | grep "^ll${tag}n" || true); do
    ip netns delete "$ns" || true
  done
  ip link delete "llbr$tag" 2>/dev/null || true
  exit 1
fi
[ "$rc" -eq 0 ] && echo "check-campaign-stop: PASS"
exit "$rc"
