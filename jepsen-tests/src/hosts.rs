//! Test hosts: N network namespaces, each with a veth pair into one bridge on the control
//! side, an address in a /24 of the suite's own, and loopback up. Made at the start of
//! every run and torn down at the end (also on drop), so nothing outlives a run. Root is
//! required; without it `create` refuses with a clear message.
//!
//! Names carry a per-run tag so concurrent runs never collide; interface names stay within
//! Linux's 15-byte limit.

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

/// Most hosts one run may create.
pub const MAX_HOSTS: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum HostsError {
    #[error(
        "the fault-injection suite needs root (network namespaces, veth, bridge); run it as root"
    )]
    NotRoot,
    #[error("between 1 and {MAX_HOSTS} hosts, not {0}")]
    Count(usize),
    #[error("`{command}` failed: {stderr}")]
    Command { command: String, stderr: String },
}

#[derive(Debug, Clone)]
pub struct Host {
    pub namespace: String,
    pub addr: Ipv4Addr,
    /// The veth end on the control side, attached to the bridge.
    pub veth: String,
}

#[derive(Debug)]
pub struct Hosts {
    pub bridge: String,
    /// The control side's address on the bridge; clients connect from here.
    pub control_addr: Ipv4Addr,
    pub hosts: Vec<Host>,
    tag: u32,
    torn_down: bool,
}

fn run(args: &[&str]) -> Result<(), HostsError> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| HostsError::Command {
            command: args.join(" "),
            stderr: e.to_string(),
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(HostsError::Command {
            command: args.join(" "),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// Effective uid from /proc (std has no geteuid).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

impl Hosts {
    /// Creates `n` hosts. `tag` (e.g. the pid) separates concurrent runs.
    pub fn create(n: usize, tag: u32) -> Result<Hosts, HostsError> {
        if !is_root() {
            return Err(HostsError::NotRoot);
        }
        if n == 0 || n > MAX_HOSTS {
            return Err(HostsError::Count(n));
        }
        let tag = tag % 100_000;
        let subnet = 10 + (tag % 240) as u8;
        let bridge = format!("llbr{tag}");
        let mut hosts = Hosts {
            bridge: bridge.clone(),
            control_addr: Ipv4Addr::new(10, 231, subnet, 1),
            hosts: Vec::new(),
            tag,
            torn_down: false,
        };
        // On any failure `hosts` drops and tears down whatever was made.
        run(&["ip", "link", "add", &bridge, "type", "bridge"])?;
        run(&[
            "ip",
            "addr",
            "add",
            &format!("{}/24", hosts.control_addr),
            "dev",
            &bridge,
        ])?;
        run(&["ip", "link", "set", &bridge, "up"])?;
        for i in 0..n {
            let ns = format!("ll{tag}n{i}");
            let (outside, inside) = (format!("llv{tag}h{i}"), format!("llv{tag}p{i}"));
            let addr = Ipv4Addr::new(10, 231, subnet, 10 + i as u8);
            run(&["ip", "netns", "add", &ns])?;
            hosts.hosts.push(Host {
                namespace: ns.clone(),
                addr,
                veth: outside.clone(),
            });
            run(&[
                "ip", "link", "add", &outside, "type", "veth", "peer", "name", &inside,
            ])?;
            run(&["ip", "link", "set", &inside, "netns", &ns])?;
            run(&["ip", "link", "set", &outside, "master", &bridge])?;
            run(&["ip", "link", "set", &outside, "up"])?;
            run(&[
                "ip",
                "netns",
                "exec",
                &ns,
                "ip",
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                &inside,
            ])?;
            run(&[
                "ip", "netns", "exec", &ns, "ip", "link", "set", &inside, "up",
            ])?;
            run(&["ip", "netns", "exec", &ns, "ip", "link", "set", "lo", "up"])?;
        }
        Ok(hosts)
    }

    /// A command that runs `program` inside host `i`'s namespace.
    pub fn command(&self, i: usize, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.hosts[i].namespace, program]);
        c
    }

    /// Deletes the namespaces (their veth ends go with them) and the bridge. Idempotent.
    pub fn teardown(&mut self) -> Result<(), HostsError> {
        if self.torn_down {
            return Ok(());
        }
        self.torn_down = true;
        let mut first_error = None;
        for h in &self.hosts {
            // Deleting one veth end removes the pair at once; deleting only the namespace
            // would leave the kernel to free it later, asynchronously. A veth that is
            // already gone (creation failed half-way) is not an error.
            if let Err(e) = run(&["ip", "link", "del", &h.veth]) {
                if !matches!(&e, HostsError::Command { stderr, .. } if stderr.contains("Cannot find device"))
                {
                    first_error.get_or_insert(e);
                }
            }
            if let Err(e) = run(&["ip", "netns", "del", &h.namespace]) {
                first_error.get_or_insert(e);
            }
        }
        if let Err(e) = run(&["ip", "link", "del", &self.bridge]) {
            first_error.get_or_insert(e);
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Whether anything this run made still exists (for the self-check).
    pub fn leftovers(&self) -> Vec<String> {
        let netns = Command::new("ip")
            .args(["netns", "list"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let links = Command::new("ip")
            .args(["-o", "link", "show"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let prefix = format!("ll{}n", self.tag);
        let mut out: Vec<String> = netns
            .lines()
            .filter(|l| l.starts_with(&prefix))
            .map(|l| l.to_string())
            .collect();
        out.extend(
            links
                .lines()
                .filter(|l| l.contains(&self.bridge) || l.contains(&format!("llv{}h", self.tag)))
                .map(|l| l.to_string()),
        );
        out
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            eprintln!("laundry-jepsen: teardown: {e}");
        }
    }
}
