#!/usr/bin/env python3
"""Runs the dev overlay's pods for real, without Kubernetes.

Each store pod and one API pod gets its own network namespace (veth to a bridge), a hosts
file holding the pod DNS names the headless Service would serve, and its own
/var/lib/laundry (a private mount). The process is started with exactly the command line
and environment the rendered StatefulSet / Deployment give the container: the image's
ENTRYPOINT from the Dockerfile (or the container's command), the ConfigMaps (envFrom),
the downward-API pod name, the Secret, and Kubernetes' $(VAR) expansion. Then it checks:

  - the three founding pods form one cluster, node id = ordinal + 1, one leader;
  - every pod's readiness probe (the manifest's path and port) answers 200;
  - the API pod is ready and serves a write and a read through the store;
  - the pre-stop hook (the manifest's command, the pod's environment) does nothing on a
    follower and moves leadership away on the leader;
  - a fourth pod (scale-up) starts and waits with no members, and the runbook's two
    commands (member add, member promote) make it a voter.

Needs root (namespaces, mounts), kubectl (kustomize) and the debug binaries. Bounded: every
wait has a deadline; everything made is removed at the end, also on failure.
"""

import base64
import json
import os
import re
import sys
import tempfile
import urllib.request

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hosts import Hosts, cluster, get, sh, wait  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "debug")
BRIDGE = "ldsbr0"
SUBNET = "10.233.0"
PREFIX = "lds"


def render():
    out = sh("kubectl", "kustomize", os.path.join(ROOT, "deploy/statefulset/overlays/dev")).stdout
    docs = [d for d in yaml.safe_load_all(out) if d]
    by = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    return by


def entrypoint():
    with open(os.path.join(ROOT, "Dockerfile")) as f:
        m = re.search(r"^ENTRYPOINT\s+(\[.*\])\s*$", f.read(), re.M)
    return json.loads(m.group(1))


def local_binary(path):
    """The image's /usr/local/bin/X is target/debug/X here."""
    name = os.path.basename(path)
    local = os.path.join(BIN, name)
    assert os.path.exists(local), f"{local} missing: cargo build first"
    return local


def expand(value, env):
    """Kubernetes $(VAR) expansion: defined variables are replaced, $$ escapes."""
    return re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), value)


def container_env(objs, container, pod_name):
    env = {}
    for src in container.get("envFrom", []):
        cm = objs[("ConfigMap", src["configMapRef"]["name"])]
        env.update(cm.get("data", {}))
    for e in container.get("env", []):
        if "value" in e:
            env[e["name"]] = expand(e["value"], env)
            continue
        ref = e["valueFrom"]
        if "fieldRef" in ref:
            assert ref["fieldRef"]["fieldPath"] == "metadata.name", ref
            env[e["name"]] = pod_name
        elif "secretKeyRef" in ref:
            s = objs[("Secret", ref["secretKeyRef"]["name"])]
            raw = s.get("data", {}).get(ref["secretKeyRef"]["key"])
            env[e["name"]] = base64.b64decode(raw).decode() if raw else s["stringData"][ref["secretKeyRef"]["key"]]
        elif "configMapKeyRef" in ref:
            cm = objs[("ConfigMap", ref["configMapKeyRef"]["name"])].get("data", {})
            key = ref["configMapKeyRef"]["key"]
            if key in cm:
                env[e["name"]] = cm[key]
            else:
                assert ref["configMapKeyRef"].get("optional"), f"{key} missing"
    env["HOSTNAME"] = pod_name
    env["PATH"] = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    return env


def store(ip):
    return cluster(f"http://{ip}:7601")


def main():
    if os.geteuid() != 0:
        sys.exit("statefulset-env: needs root (network namespaces, mounts)")
    objs = render()
    sts = objs[("StatefulSet", "laundry-store")]
    node = sts["spec"]["template"]["spec"]["containers"][0]
    api_dep = objs[("Deployment", "laundry-api")]
    api = api_dep["spec"]["template"]["spec"]["containers"][0]
    service = sts["spec"]["serviceName"]
    replicas = sts["spec"]["replicas"]
    assert sts["spec"]["podManagementPolicy"] == "Parallel"

    ips = {f"laundry-store-{i}": f"{SUBNET}.{10 + i}" for i in range(replicas + 1)}
    hosts = {f"{pod}.{service}": ip for pod, ip in ips.items()}
    work = tempfile.mkdtemp(prefix="statefulset-env-")
    pods = Hosts(work, BRIDGE, SUBNET, PREFIX)
    ok = False
    try:
        namespaces = {pod: pods.add(ip, hosts) for pod, ip in ips.items()}
        volumes = {pod: os.path.join(work, pod) for pod in ips}
        for v in volumes.values():
            os.makedirs(os.path.join(v, "data"), exist_ok=True)
            os.makedirs(os.path.join(v, "backups"), exist_ok=True)
        mounts = {pod: {v: "/var/lib/laundry"} for pod, v in volumes.items()}
        argv = [local_binary(a) if a.startswith("/usr/local/bin/") else a
                for a in (node.get("command") or entrypoint())] + node.get("args", [])
        envs = {pod: container_env(objs, node, pod) for pod in ips}
        founding = [f"laundry-store-{i}" for i in range(replicas)]
        for pod in founding:
            pods.start(namespaces[pod], pod, argv, envs[pod], mounts[pod])

        # One cluster, ids from ordinals, one leader.
        def formed():
            views = [store(ips[p]) for p in founding]
            if None in views or len({v["leader_id"] for v in views}) != 1 or views[0]["leader_id"] is None:
                return None
            return views
        views = wait("three founding pods form a cluster", formed)
        assert [v["node_id"] for v in views] == [1, 2, 3], [v["node_id"] for v in views]
        assert sorted(views[0]["voters"]) == [1, 2, 3], views[0]
        leader = views[0]["leader_id"]
        print(f"cluster formed: voters {sorted(views[0]['voters'])}, leader node {leader}")

        probe = node["readinessProbe"]["httpGet"]
        port = {p["name"]: p["containerPort"] for p in node["ports"]}[probe["port"]]
        for pod in founding:
            wait(f"{pod} readiness probe", lambda: get(f"http://{ips[pod]}:{port}{probe['path']}")[0] == 200)
        print("readiness probes: 200 on every pod")

        # The API pod, with its Deployment's command and environment.
        api_ip = f"{SUBNET}.50"
        api_ns = pods.add(api_ip, hosts)
        api_env = container_env(objs, api, "laundry-api-0")
        pods.start(api_ns, "laundry-api-0", [local_binary(a) for a in api["command"]] + api.get("args", []),
                   api_env, {})
        api_port = {p["name"]: p["containerPort"] for p in api["ports"]}["http"]
        base = f"http://{api_ip}:{api_port}"
        wait("API pod ready", lambda: get(base + api["readinessProbe"]["httpGet"]["path"])[0] == 200)
        body = json.dumps({"id": "deploy-check", "name": "Deploy check"}).encode()
        req = urllib.request.Request(base + "/v1/items", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=20) as r:
            assert r.status == 201, r.status
        code, text = get(base + "/v1/items/deploy-check")
        assert code == 200 and json.loads(text)["name"] == "Deploy check", (code, text)
        print("API pod: ready, write and read through the store")

        # Pre-stop hook: a no-op on a follower, a hand-off on the leader.
        hook = node["lifecycle"]["preStop"]["exec"]["command"]
        hook = [local_binary(a) if a.startswith("/usr/local/bin/") else a for a in hook]
        follower = next(p for p in founding if int(p.rsplit("-", 1)[1]) + 1 != leader)
        r = pods.run(namespaces[follower], hook, envs[follower])
        assert r.returncode == 0, r
        assert store(ips[follower])["leader_id"] == leader, "a follower's pre-stop moved leadership"
        leader_pod = f"laundry-store-{leader - 1}"
        r = pods.run(namespaces[leader_pod], hook, envs[leader_pod])
        assert r.returncode == 0, r
        new_leader = wait("leadership moved by the pre-stop hook",
                          lambda: (lambda v: v and v["leader_id"] not in (None, leader) and v["leader_id"])(store(ips[follower])))
        print(f"pre-stop hook: follower no-op; leader {leader} handed off to {new_leader}")

        # Scale-up: pod 3 (node 4) starts, waits unconfigured, then joins by the runbook.
        extra = f"laundry-store-{replicas}"
        pods.start(namespaces[extra], extra, argv, envs[extra], mounts[extra])
        wait(f"{extra} serving its admin port", lambda: store(ips[extra]) is not None)
        assert store(ips[extra])["voters"] == [], store(ips[extra])
        ctl = [local_binary("/usr/local/bin/laundryctl"),
               "--admin-endpoints", ",".join(f"{hosts_name}:7601" for hosts_name in list(hosts)[:replicas])]
        ctl_env = dict(envs[founding[0]])
        ctl_env.pop("LAUNDRY_ADMIN_ENDPOINTS", None)
        new_id = replicas + 1
        name = f"{extra}.{service}"
        add = ctl + ["member", "add", str(new_id), "--peer-addr", f"{name}:7501",
                     "--client-addr", f"{name}:7401", "--admin-addr", f"{name}:7601"]
        r = pods.run(namespaces[founding[0]], add, ctl_env)
        assert r.returncode == 0, r
        r = pods.run(namespaces[founding[0]], ctl + ["member", "promote", str(new_id)], ctl_env)
        assert r.returncode == 0, r
        view = wait("four voters", lambda: (lambda v: v and sorted(v["voters"]) == [1, 2, 3, 4] and v)(store(ips[extra])))
        print(f"scale-up: node {new_id} joined as learner, promoted: voters {sorted(view['voters'])}")
        ok = True
    finally:
        pods.finish(ok, "statefulset-env")


if __name__ == "__main__":
    main()
