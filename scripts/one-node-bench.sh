# Sourced by the one-node benchmarks (bench-restart.sh, bench-build-memory.sh): strict
# mode, the repository root as working directory, ITEMS and LOCATIONS from the first two
# arguments (default 100000 x 10 = a million levels), the release binaries built, a
# temporary data directory removed (and the node killed) on exit, and NODE_BIN.
set -euo pipefail
cd "$(dirname "$0")/.."
items="${1:-100000}"
locations="${2:-10}"
cargo build --quiet --release -p laundry-node -p laundry-benches --bin laundry-node --bin laundry-load-levels --bin laundry-bench
bin="${CARGO_TARGET_DIR:-target}/release"
data=$(mktemp -d)
trap 'kill $(cat "$data/pid" 2>/dev/null) 2>/dev/null || true; rm -rf "$data"' EXIT
node_bin="${NODE_BIN:-$bin/laundry-node}"
