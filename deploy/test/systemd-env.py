#!/usr/bin/env python3
"""Runs the OpenStack instances' store nodes for real, without OpenStack or systemd.

Heat's engine renders each instance's /etc/laundry/node.env (deploy/openstack/
validate_hot.py --node-envs); the command lines come from the units themselves
(laundry-node.service: ExecStart, ExecStop; laundry-backup.service: ExecStart). Each
instance is a network namespace at the address the template gives it, with its own
/etc/laundry (that env file and a TLS certificate made here for the instance addresses),
its own /var/lib/laundry (the data volume) and a shared /mnt/nas (the NAS). Checks:

  - the three instances form one TLS cluster, node id = index + 1, one leader;
  - ExecStop (the hand-off) does nothing on a follower and moves leadership on the leader;
  - the backup service's commands write a verified archive to the NAS directory the
    template names, and the volume-snapshot step skips cleanly without credentials.

The sandboxing settings of the unit (user, read-only system) are checked by
systemd-analyze in deploy/validate.sh, not emulated here. Needs root and openssl.
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hosts import Hosts, cluster, wait  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OPENSTACK = os.path.join(ROOT, "deploy/openstack")
BIN = os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "debug")
HEAT_PYTHON = os.path.join(
    os.environ.get("LAUNDRY_TOOLS_CACHE", os.path.expanduser("~/.cache/laundry-list")),
    "openstack-heat-27.0.1/bin/python",
)
COUNT = 3
PREFIX = "10.234.0.1"  # instance i at 10.234.0.1i, as node_ip_prefix works in the template


def unit(name):
    """The [Service] settings of a unit, multi-valued keys as lists."""
    settings = {}
    section = None
    with open(os.path.join(OPENSTACK, name)) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("["):
                section = line
                continue
            if section == "[Service]":
                key, value = line.split("=", 1)
                settings.setdefault(key, []).append(value)
    return settings


def command(line):
    """An Exec* line: the leading '-' (ignore failure) dropped, binaries mapped to ours."""
    argv = line.lstrip("-").split()
    path = argv[0]
    if path.startswith("/usr/local/bin/"):
        argv[0] = os.path.join(BIN, os.path.basename(path))
    elif path.startswith("/usr/local/sbin/"):
        argv[0] = os.path.join(OPENSTACK, os.path.basename(path))
    assert os.path.exists(argv[0]), argv[0]
    return argv


def env_file(path):
    env = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                key, value = line.split("=", 1)
                env[key] = value
    env["PATH"] = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    return env


def make_tls(out, ips):
    def run(*args):
        subprocess.run(args, check=True, capture_output=True, cwd=out)

    run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=laundry-test-ca",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    run("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", "node.key", "-out", "node.csr", "-subj", "/CN=laundry-node")
    with open(os.path.join(out, "ext.cnf"), "w") as f:
        f.write("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                "extendedKeyUsage=serverAuth,clientAuth\n"
                "subjectAltName=" + ",".join(f"IP:{ip}" for ip in ips) + "\n")
    run("openssl", "x509", "-req", "-in", "node.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "node.crt", "-days", "2", "-extfile", "ext.cnf")


def main():
    if os.geteuid() != 0:
        sys.exit("systemd-env: needs root (network namespaces, mounts)")
    work = tempfile.mkdtemp(prefix="systemd-env-")
    ips = [f"{PREFIX}{i}" for i in range(COUNT)]
    envs_dir = os.path.join(work, "envs")
    os.makedirs(envs_dir)
    subprocess.run([HEAT_PYTHON, os.path.join(OPENSTACK, "validate_hot.py"), "--node-envs", str(COUNT),
                    PREFIX, envs_dir], check=True, capture_output=True, env=dict(os.environ, PYTHONWARNINGS="ignore"))
    tls = os.path.join(work, "tls")
    os.makedirs(tls)
    make_tls(tls, ips)
    node_unit = unit("laundry-node.service")
    backup_unit = unit("laundry-backup.service")
    assert node_unit["EnvironmentFile"] == ["/etc/laundry/node.env"], node_unit
    start = command(node_unit["ExecStart"][0])
    stop = command(node_unit["ExecStop"][0])
    nas = os.path.join(work, "nas")
    os.makedirs(os.path.join(nas, "laundry-list"))

    hosts = Hosts(work, "ldsysbr0", "10.234.0", "ldsys")
    ok = False
    try:
        instances = []
        for i, ip in enumerate(ips):
            etc = os.path.join(work, f"etc-{i}")
            os.makedirs(os.path.join(etc, "tls"))
            shutil.copy(os.path.join(envs_dir, f"node-{i}.env"), os.path.join(etc, "node.env"))
            with open(os.path.join(etc, "volume.env"), "w") as f:
                f.write("DATA_VOLUME_ID=test-volume\nSNAPSHOT_RETAIN=24\n")
            for src, dst in [("ca.crt", "ca.crt"), ("node.crt", "node.crt"), ("node.key", "node.key")]:
                shutil.copy(os.path.join(tls, src), os.path.join(etc, "tls", dst))
            volume = os.path.join(work, f"volume-{i}")
            os.makedirs(os.path.join(volume, "data"))
            openstack_etc = os.path.join(work, f"openstack-{i}")  # no clouds.yaml: no snapshots
            os.makedirs(openstack_etc)
            mounts = {etc: "/etc/laundry", volume: "/var/lib/laundry", nas: "/mnt/nas",
                      openstack_etc: "/etc/openstack"}
            env = env_file(os.path.join(etc, "node.env"))
            ns = hosts.add(ip, {})
            hosts.start(ns, f"instance-{i}", start, env, mounts)
            instances.append((ns, env, mounts))
        ca = os.path.join(tls, "ca.crt")

        def view(i):
            return cluster(f"https://{ips[i]}:7601", cafile=ca)

        def formed():
            views = [view(i) for i in range(COUNT)]
            if None in views or len({v["leader_id"] for v in views}) != 1 or views[0]["leader_id"] is None:
                return None
            return views
        views = wait("three instances form a TLS cluster", formed)
        assert [v["node_id"] for v in views] == [1, 2, 3], [v["node_id"] for v in views]
        leader = views[0]["leader_id"]
        print(f"cluster formed over TLS: voters {sorted(views[0]['voters'])}, leader node {leader}")

        follower = next(i for i in range(COUNT) if i + 1 != leader)
        ns, env, mounts = instances[follower]
        r = hosts.run(ns, stop, env, mounts)
        assert r.returncode == 0, r
        assert view(follower)["leader_id"] == leader, "ExecStop on a follower moved leadership"
        ns, env, mounts = instances[leader - 1]
        r = hosts.run(ns, stop, env, mounts)
        assert r.returncode == 0, r
        moved = wait("ExecStop hands leadership off",
                     lambda: (lambda v: v and v["leader_id"] not in (None, leader) and v["leader_id"])(view(follower)))
        print(f"ExecStop: follower no-op; leader {leader} handed off to {moved}")

        # The backup service, on an instance that is not the leader now: the call goes to
        # the leader, which writes to the NAS directory from LAUNDRY_BACKUP_DIR.
        ns, env, mounts = instances[follower if follower + 1 != moved else (leader - 1)]
        for line in backup_unit["ExecStart"]:
            r = hosts.run(ns, command(line), env, mounts)
            assert r.returncode == 0, r
        archives = [f for f in os.listdir(os.path.join(nas, "laundry-list")) if f.endswith(".llbackup")]
        assert len(archives) == 1, archives
        assert re.search(r"skipped", r.stdout), r.stdout
        print(f"backup service: {archives[0]} on the NAS; volume snapshot skipped without credentials")
        ok = True
    finally:
        hosts.finish(ok, "systemd-env")


if __name__ == "__main__":
    main()
