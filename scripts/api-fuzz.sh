#!/usr/bin/env bash
# Property-based fuzzing of a running laundry-api against the OpenAPI document it serves,
# with schemathesis (from PyPI, installed into a cached virtualenv on first use). Fails if
# any generated request gets a server error (5xx) or a response that breaks the document
# (status code, content type, headers, body schema), or if a schema-violating request is
# accepted.
#
#   scripts/api-fuzz.sh [BASE_URL] [MAX_EXAMPLES]     # default http://127.0.0.1:7480, 60
#
# The event stream (/v1/movements/stream) never ends by design, so it is left out here and
# tested by api/tests/api.rs. "positive_data_acceptance" is left out because the store
# legitimately refuses many schema-valid requests (unknown items, insufficient stock...).
# LAUNDRY_FUZZ_SEED fixes the generator's seed (CI uses a fixed one).
set -euo pipefail
base="${1:-http://127.0.0.1:7480}"
examples="${2:-60}"
version=4.32.5
venv="${LAUNDRY_FUZZ_VENV:-$HOME/.cache/laundry-list/schemathesis-$version}"
if [ ! -x "$venv/bin/schemathesis" ]; then
  python3 -m venv "$venv" 2>/dev/null || {
    export DEBIAN_FRONTEND=noninteractive; apt-get update -qq >/dev/null
    apt-get install -y -qq python3-venv >/dev/null && python3 -m venv "$venv"; }
  "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$version"
fi
# Run from a scratch directory: schemathesis keeps a crash cache in the working directory,
# which would make one run depend on the last.
workdir=$(mktemp -d)
trap 'rm -rf "$workdir"' EXIT
cd "$workdir"
seed_args=()
[ -n "${LAUNDRY_FUZZ_SEED:-}" ] && seed_args=(--seed "$LAUNDRY_FUZZ_SEED")
# The coverage phase trips an internal error of schemathesis on Python 3.11 (AST recursion
# bookkeeping in hypothesis); examples and fuzzing exercise every operation.
"$venv/bin/schemathesis" run "$base/openapi.json" \
  --checks all --exclude-checks positive_data_acceptance \
  --exclude-path /v1/movements/stream \
  --phases examples,fuzzing --max-examples "$examples" \
  --request-timeout 20 --workers 2 --no-color --generation-database none \
  "${seed_args[@]}"
