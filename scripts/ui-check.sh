#!/usr/bin/env bash
# Renders a node's admin status page in headless Chromium and checks what a person would
# see: the members table (with the leader marked) and recent movements, filled in by the
# page's own JavaScript. Usage: scripts/ui-check.sh http://127.0.0.1:7601/
# Installs Debian's chromium when missing (root, apt).
set -euo pipefail
url="${1:?usage: scripts/ui-check.sh ADMIN_URL}"

browser=$(command -v chromium || command -v chromium-browser || true)
if [ -z "$browser" ]; then
  echo "installing chromium for the status page check..."
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q chromium >/dev/null
  browser=$(command -v chromium)
fi

profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
# Flags: no sandbox as root, no GPU, and nothing that phones out (this machine has no
# network beyond loopback). The virtual time budget lets the page's fetches complete.
dom=$(timeout 60 "$browser" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --user-data-dir="$profile" --virtual-time-budget=8000 --dump-dom "$url" 2>/dev/null)

fail() { echo "ui-check: $1" >&2; echo "$dom" | head -c 4000 >&2; exit 1; }
grep -q 'data-rendered="yes"' <<<"$dom" || fail "the page's script never rendered the cluster status"
members=$(grep -o '<tr data-node="[0-9]*"' <<<"$dom" | wc -l)
[ "$members" -ge 3 ] || fail "expected at least 3 member rows, saw $members"
grep -q '(leader)' <<<"$dom" || fail "no member is marked as the leader"
moves=$(grep -o '<tr class="movement"' <<<"$dom" | wc -l)
[ "$moves" -ge 1 ] || fail "no recent movements shown"
grep -q '<div id="error" role="alert"></div>' <<<"$dom" || fail "the page shows an error"
echo "ui-check: status page rendered in $("$browser" --version 2>/dev/null | head -1): $members members, $moves movements"
