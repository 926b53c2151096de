#!/usr/bin/env bash
# Time from SIGKILL of the leader to the first acknowledged write, over N fresh release
# clusters on loopback (default 5). Prints each trial and the median.
set -euo pipefail
cd "$(dirname "$0")/.."
trials="${1:-5}"
base=19700
cargo build --quiet --release -p laundry-benches --bin laundry-failover
results=()
for t in $(seq 1 "$trials"); do
  data=$(mktemp -d)
  export LAUNDRY_DEV_DATA="$data" LAUNDRY_DEV_BASE_PORT=$base LAUNDRY_PROFILE=release
  bash scripts/dev-cluster.sh --detach >/dev/null
  line=$("${CARGO_TARGET_DIR:-target}/release/laundry-failover" --pid-dir "$data" \
    --endpoints "127.0.0.1:$((base + 1)),127.0.0.1:$((base + 2)),127.0.0.1:$((base + 3))")
  echo "trial $t: $line"
  results+=("$(grep -o '[0-9]* ms' <<<"$line" | cut -d' ' -f1)")
  bash scripts/dev-cluster.sh stop >/dev/null
  rm -rf "$data"
done
sorted=$(printf '%s\n' "${results[@]}" | sort -n)
echo "median: $(sed -n "$(( (trials + 1) / 2 ))p" <<<"$sorted") ms over $trials trials (heartbeat ${LAUNDRY_HEARTBEAT_MS:-50} ms, election timeout ${LAUNDRY_ELECTION_MIN_MS:-300}-${LAUNDRY_ELECTION_MAX_MS:-600} ms)"
