#!/usr/bin/env bash
# Starts a local 3-node Laundry List cluster: three laundry-node processes on loopback,
# data under ./laundry-data (or $LAUNDRY_DEV_DATA), and one laundry-api (the REST front)
# in front of them; loads the sample inventory and prints where to reach it. Stays in the foreground until Ctrl-C, then stops the nodes.
#
#   scripts/dev-cluster.sh            # start, load sample, wait for Ctrl-C
#   scripts/dev-cluster.sh --detach   # start, load sample, return (nodes keep running)
#   scripts/dev-cluster.sh stop       # stop a detached cluster
#   scripts/dev-cluster.sh --wipe     # delete the data directory first
#
# Environment: LAUNDRY_DEV_DATA (data dir), LAUNDRY_PROFILE (dev|release, default dev),
# LAUNDRY_DEV_BASE_PORT (default 7400: clients 7401-7403, peers 7501-7503, admin 7601-7603,
# REST API 7480),
# LAUNDRY_ADMIN_TOKEN (default: a fixed development token; set your own anywhere else).
set -euo pipefail
cd "$(dirname "$0")/.."

data="${LAUNDRY_DEV_DATA:-$PWD/laundry-data}"
profile="${LAUNDRY_PROFILE:-dev}"
base="${LAUNDRY_DEV_BASE_PORT:-7400}"
target_dir="${CARGO_TARGET_DIR:-$PWD/target}"
bin_dir="$target_dir/debug"
[ "$profile" = release ] && bin_dir="$target_dir/release"

stop_nodes() {
  for pidfile in "$data"/api.pid "$data"/node-*.pid; do
    [ -e "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$pidfile"
  done
}

detach=0
for arg in "$@"; do
  case "$arg" in
    stop) stop_nodes; echo "stopped the cluster in $data"; exit 0 ;;
    --detach) detach=1 ;;
    --wipe) stop_nodes; rm -rf "$data" ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "unknown argument: $arg (see --help)" >&2; exit 2 ;;
  esac
done

echo "building laundry-node, laundry-api and laundryctl ($profile profile)..."
cargo build --quiet --profile "$profile" -p laundry-node -p laundry-client -p laundry-api --bins

mkdir -p "$data"
stop_nodes
members=""
for id in 1 2 3; do
  members="${members:+$members,}$id=127.0.0.1:$((base + 100 + id))/127.0.0.1:$((base + id))/127.0.0.1:$((base + 200 + id))"
done
endpoints="127.0.0.1:$((base + 1)),127.0.0.1:$((base + 2)),127.0.0.1:$((base + 3))"
admin_endpoints="127.0.0.1:$((base + 201)),127.0.0.1:$((base + 202)),127.0.0.1:$((base + 203))"
export LAUNDRY_ADMIN_TOKEN="${LAUNDRY_ADMIN_TOKEN:-dev-only-admin-token-change-me}"

for id in 1 2 3; do
  "$bin_dir/laundry-node" --id "$id" --data-dir "$data/node-$id" \
    --client-addr "127.0.0.1:$((base + id))" --peer-addr "127.0.0.1:$((base + 100 + id))" \
    --admin-addr "127.0.0.1:$((base + 200 + id))" --plaintext \
    --initial-members "$members" >>"$data/node-$id.log" 2>&1 &
  echo $! >"$data/node-$id.pid"
done

LAUNDRY_API_LISTEN="127.0.0.1:$((base + 80))" LAUNDRY_API_STORE_ENDPOINTS="$endpoints" \
  LAUNDRY_API_STORE_PLAINTEXT=true "$bin_dir/laundry-api" >>"$data/api.log" 2>&1 &
echo $! >"$data/api.pid"

if [ "$detach" = 0 ]; then
  trap 'echo; echo "stopping..."; stop_nodes; exit 0' INT TERM
fi

ctl() { "$bin_dir/laundryctl" --endpoints "$endpoints" --admin-endpoints "$admin_endpoints" "$@"; }

# Wait (bounded) until the cluster elects a leader and answers a linearizable read.
for attempt in $(seq 1 60); do
  if ctl --timeout-ms 1000 location list >/dev/null 2>&1; then break; fi
  if [ "$attempt" = 60 ]; then
    echo "the cluster did not come up within 30 s; logs are in $data/node-*.log" >&2
    stop_nodes; exit 1
  fi
  sleep 0.5
done

ctl sample
echo
ctl cluster status
cat <<MSG

Laundry List is running: 3 nodes, data in $data
  client (gRPC) endpoints: $endpoints
  peer (Raft) ports:       $((base + 101))-$((base + 103))
  admin (HTTP) endpoints:  $admin_endpoints   (token: \$LAUNDRY_ADMIN_TOKEN)
  REST API:                http://127.0.0.1:$((base + 80))/v1/items   (OpenAPI: /openapi.json)
  metrics:                 curl http://127.0.0.1:$((base + 201))/metrics
  logs:                    $data/node-{1,2,3}.log, $data/api.log
Try:
  export LAUNDRY_ENDPOINTS=$endpoints LAUNDRY_ADMIN_ENDPOINTS=$admin_endpoints
  export LAUNDRY_ADMIN_TOKEN=$LAUNDRY_ADMIN_TOKEN
  $bin_dir/laundryctl stock tee-black-m
  $bin_dir/laundryctl movements
  $bin_dir/laundryctl transfer tee-black-m wh-west store-soho 5 --reason restock
  $bin_dir/laundryctl cluster status
  $bin_dir/laundryctl leader handoff
  curl -s http://127.0.0.1:$((base + 80))/v1/items/tee-black-m/stock
MSG

if [ "$detach" = 1 ]; then
  echo "  (detached; stop with: scripts/dev-cluster.sh stop)"
  exit 0
fi
echo "Ctrl-C stops the cluster."
wait
