"""Test hosts for the deployment tests: each host is a network namespace on a bridge, with
its own hosts file (the names a DNS server would give) and private bind mounts (its own
volumes), running a process with exactly the argv and environment it is given. Everything
made is removed by close(), also after a failure."""

import json
import os
import shutil
import ssl
import sys
import subprocess
import time
import urllib.error
import urllib.request


def sh(*args, check=True):
    return subprocess.run(args, check=check, capture_output=True, text=True)


class Hosts:
    def __init__(self, work, bridge, subnet, prefix):
        self.work, self.bridge, self.subnet, self.prefix = work, bridge, subnet, prefix
        self.names = []
        self.procs = {}
        sh("ip", "link", "add", bridge, "type", "bridge")
        sh("ip", "addr", "add", f"{subnet}.1/24", "dev", bridge)
        sh("ip", "link", "set", bridge, "up")

    def add(self, ip, hosts):
        """A namespace with address `ip` and `hosts` (name -> address) in its /etc/hosts."""
        ns = f"{self.prefix}-{len(self.names)}"
        self.names.append(ns)
        host_veth, ns_veth = f"{ns}-h", f"{ns}-p"
        sh("ip", "netns", "add", ns)
        sh("ip", "link", "add", host_veth, "type", "veth", "peer", "name", ns_veth)
        sh("ip", "link", "set", host_veth, "master", self.bridge, "up")
        sh("ip", "link", "set", ns_veth, "netns", ns)
        sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", ns_veth)
        sh("ip", "-n", ns, "link", "set", ns_veth, "up")
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        etc = f"/etc/netns/{ns}"
        os.makedirs(etc, exist_ok=True)
        with open(f"{etc}/hosts", "w") as f:
            f.write("127.0.0.1 localhost\n" + "".join(f"{a} {n}\n" for n, a in hosts.items()))
        return ns

    def start(self, ns, name, argv, env, mounts):
        """Runs argv in namespace `ns` with `mounts` ({host dir: path}) bound privately."""
        binds = []
        for source, target in mounts.items():
            os.makedirs(target, exist_ok=True)  # an empty mount point on the host
            binds.append(f'mount --bind "{source}" "{target}"')
        wrapper = " && ".join(binds + ['exec "$@"'])
        log = open(os.path.join(self.work, f"{name}.log"), "w")
        cmd = ["ip", "netns", "exec", ns, "unshare", "--mount", "--propagation", "private",
               "sh", "-c", wrapper, name, *argv]
        self.procs[name] = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)

    def run(self, ns, argv, env, mounts=None):
        """A command to completion in namespace `ns` (with `mounts`), like an exec hook."""
        binds = [f'mount --bind "{s}" "{t}"' for s, t in (mounts or {}).items()]
        wrapper = " && ".join(binds + ['exec "$@"'])
        return subprocess.run(["ip", "netns", "exec", ns, "unshare", "--mount", "--propagation",
                               "private", "sh", "-c", wrapper, "run", *argv],
                              env=env, capture_output=True, text=True, timeout=60)

    def logs(self):
        out = []
        for f in sorted(os.listdir(self.work)):
            if f.endswith(".log"):
                with open(os.path.join(self.work, f)) as fh:
                    out.append(f"--- {f}\n{fh.read()[-2000:]}")
        return "\n".join(out)

    def finish(self, ok, name):
        """Ends a test: removes everything; keeps the work dir and prints the logs on failure."""
        self.close()
        if ok:
            shutil.rmtree(self.work, ignore_errors=True)
            print(f"{name}: ok")
        else:
            print(f"logs kept in {self.work}\n{self.logs()}", file=sys.stderr)

    def close(self):
        for p in self.procs.values():
            p.kill()
            p.wait()
        for ns in self.names:
            sh("ip", "netns", "del", ns, check=False)
            sh("ip", "link", "del", f"{ns}-h", check=False)
            shutil.rmtree(f"/etc/netns/{ns}", ignore_errors=True)
        sh("ip", "link", "del", self.bridge, check=False)


def get(url, timeout=2, cafile=None):
    context = ssl.create_default_context(cafile=cafile) if cafile else None
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except (urllib.error.URLError, OSError) as e:
        return 0, str(e)


def cluster(url, cafile=None):
    code, body = get(url + "/cluster", cafile=cafile)
    return json.loads(body) if code == 200 else None


def wait(what, fn, timeout_s=40):
    deadline = time.time() + timeout_s
    last = None
    while time.time() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(0.25)
    raise AssertionError(f"{what}: not within {timeout_s} s (last: {last!r})")
