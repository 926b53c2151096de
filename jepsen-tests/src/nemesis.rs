//! Nemeses: the faults a campaign injects, one at a time on a schedule, each healed before
//! the next. Partitions are nftables rules inside the hosts' namespaces (each host drops
//! packets from the hosts it must not hear); the control side, where the clients run,
//! always reaches every host, as in Jepsen. Kill and pause act on the node process.
//!
//! The grudge of a partition (who drops whom) is computed by pure functions, unit-tested
//! below; applying it is one `nft -f` per host.

use crate::hosts::Hosts;
use std::collections::BTreeSet;
use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

/// One fault. `target` choices (the leader, a random split) are made when it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fault {
    /// SIGKILL the leader; restart it when healed.
    Kill,
    /// SIGSTOP the leader; SIGCONT when healed.
    Pause,
    /// The leader alone on one side, everyone else on the other.
    IsolateLeader,
    /// A random split into a minority and a majority.
    Halves,
    /// Every node sees a majority, but no two nodes the same one (Jepsen's majorities ring).
    Ring,
    /// Two halves joined by one node that sees both.
    Bridge,
    /// Remove a follower from the membership under load; re-add it (learner, then voter)
    /// when healed.
    Membership,
    /// The leader's wall clock jumps by tens of seconds (libfaketime); back when healed.
    ClockSkew,
    /// The leader's wall clock flips back and forth every second while the fault lasts.
    ClockStrobe,
}

impl Fault {
    /// The faults one name stands for (`partition`: the four shapes; `clock`: both).
    fn expand(name: &str) -> Result<Vec<Fault>, String> {
        Ok(match name {
            "kill" => vec![Fault::Kill],
            "pause" => vec![Fault::Pause],
            "isolate-leader" => vec![Fault::IsolateLeader],
            "halves" => vec![Fault::Halves],
            "ring" => vec![Fault::Ring],
            "bridge" => vec![Fault::Bridge],
            "partition" => vec![
                Fault::IsolateLeader,
                Fault::Halves,
                Fault::Ring,
                Fault::Bridge,
            ],
            "membership" => vec![Fault::Membership],
            "clock-skew" => vec![Fault::ClockSkew],
            "clock-strobe" => vec![Fault::ClockStrobe],
            "clock" => vec![Fault::ClockSkew, Fault::ClockStrobe],
            other => {
                return Err(format!(
                    "unknown nemesis {other:?}: kill, pause, isolate-leader, halves, ring, \
                     bridge, partition (all four), membership, clock-skew, clock-strobe, \
                     clock (both)"
                ))
            }
        })
    }

    /// A schedule: comma-separated steps taken in turn; `a+b` applies a and b together
    /// (e.g. `partition+clock-skew`: each partition shape with a skewed clock).
    pub fn parse_schedule(s: &str) -> Result<Vec<Vec<Fault>>, String> {
        let mut schedule = Vec::new();
        for step in s.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let mut groups: Vec<Vec<Fault>> = vec![Vec::new()];
            for part in step.split('+').map(str::trim) {
                let alternatives = Fault::expand(part)?;
                groups = groups
                    .iter()
                    .flat_map(|g| {
                        alternatives.iter().map(move |f| {
                            let mut g = g.clone();
                            g.push(*f);
                            g
                        })
                    })
                    .collect();
            }
            for g in &groups {
                let partitions = g.iter().filter(|f| f.is_partition()).count();
                let clocks = g.iter().filter(|f| f.is_clock()).count();
                if partitions > 1 || clocks > 1 || g.len() > 4 {
                    return Err(format!(
                        "{step:?}: combine at most one partition and one clock fault"
                    ));
                }
            }
            schedule.extend(groups);
        }
        if schedule.is_empty() {
            return Err("no nemesis given".into());
        }
        Ok(schedule)
    }

    pub fn is_partition(self) -> bool {
        matches!(
            self,
            Fault::IsolateLeader | Fault::Halves | Fault::Ring | Fault::Bridge
        )
    }

    pub fn is_clock(self) -> bool {
        matches!(self, Fault::ClockSkew | Fault::ClockStrobe)
    }
}

/// For each host, the hosts it drops packets from: everyone outside its view.
pub fn grudge(views: &[BTreeSet<usize>]) -> Vec<BTreeSet<usize>> {
    let n = views.len();
    (0..n)
        .map(|a| {
            (0..n)
                .filter(|&b| b != a && !views[a].contains(&b))
                .collect()
        })
        .collect()
}

/// Views from components that may overlap (bridge): a host hears every host it shares a
/// component with.
fn from_components(n: usize, components: &[BTreeSet<usize>]) -> Vec<BTreeSet<usize>> {
    (0..n)
        .map(|a| {
            components
                .iter()
                .filter(|c| c.contains(&a))
                .flat_map(|c| c.iter().copied())
                .chain([a])
                .collect()
        })
        .collect()
}

/// What each host hears (itself included) under a partition fault, given the leader's
/// index and a random number. Symmetric: a hears b exactly when b hears a. Needs 3+ nodes
/// (the campaign's flags are checked for that before any host is made).
pub fn views(fault: Fault, n: usize, leader: usize, rand: u64) -> Vec<BTreeSet<usize>> {
    assert!(n >= 3 && leader < n, "partitions need 3+ nodes");
    let components = match fault {
        Fault::IsolateLeader => vec![
            BTreeSet::from([leader]),
            (0..n).filter(|&i| i != leader).collect(),
        ],
        Fault::Halves => {
            // A rotation of the nodes, the first floor(n/2) are the minority.
            let start = (rand % n as u64) as usize;
            let order: Vec<usize> = (0..n).map(|i| (start + i) % n).collect();
            let (minority, majority) = order.split_at(n / 2);
            vec![
                minority.iter().copied().collect(),
                majority.iter().copied().collect(),
            ]
        }
        Fault::Ring => {
            // Node i hears the nodes within cycle distance d, d the least that makes each
            // view a majority: every view a majority, no two views the same (n >= 5).
            let majority = n / 2 + 1;
            let d = (majority - 1).div_ceil(2);
            return (0..n)
                .map(|i| {
                    (0..=2 * d)
                        .map(|k| (i + n - d + k) % n)
                        .collect::<BTreeSet<usize>>()
                })
                .collect();
        }
        Fault::Bridge => {
            let start = (rand % n as u64) as usize;
            let order: Vec<usize> = (0..n).map(|i| (start + i) % n).collect();
            let mid = n / 2;
            vec![
                order[..=mid].iter().copied().collect(),
                order[mid..].iter().copied().collect(),
            ]
        }
        _ => vec![(0..n).collect()],
    };
    from_components(n, &components)
}

fn nft(namespace: &str, script: &str) -> Result<(), String> {
    let mut child = Command::new("ip")
        .args(["netns", "exec", namespace, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("nft in {namespace}: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(|e| format!("nft in {namespace}: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("nft in {namespace}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "nft in {namespace}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

const TABLE: &str = "laundry_nemesis";

/// Installs the grudge: host i drops everything from the addresses it must not hear.
pub fn partition(hosts: &Hosts, grudge: &[BTreeSet<usize>]) -> Result<(), String> {
    heal(hosts)?;
    for (i, drops) in grudge.iter().enumerate() {
        if drops.is_empty() {
            continue;
        }
        let addrs: Vec<Ipv4Addr> = drops.iter().map(|&j| hosts.hosts[j].addr).collect();
        let set = addrs
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let script = format!(
            "table inet {TABLE} {{\n  chain input {{\n    type filter hook input priority 0; policy accept;\n    ip saddr {{ {set} }} drop\n  }}\n}}\n"
        );
        nft(&hosts.hosts[i].namespace, &script)?;
    }
    Ok(())
}

/// Removes every partition rule (a host without the table is fine).
pub fn heal(hosts: &Hosts) -> Result<(), String> {
    for h in &hosts.hosts {
        // `destroy` is newer than Debian 12's nft; add-then-delete is idempotent everywhere.
        nft(
            &h.namespace,
            &format!("table inet {TABLE} {{}}\ndelete table inet {TABLE}\n"),
        )?;
    }
    Ok(())
}

/// Whether `nft` is installed (partitions need it).
pub fn nft_available() -> bool {
    Command::new("nft")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// libfaketime, from Debian's faketime package: clock faults need it.
pub const FAKETIME_LIB: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";

/// Sets a node's wall-clock offset (libfaketime's timestamp file; nodes re-read it within
/// a second). Monotonic time is left alone: only the wall clock is wrong, as after a bad
/// NTP step.
pub fn set_clock_offset(file: &std::path::Path, offset_s: i64) -> Result<(), String> {
    std::fs::write(file, format!("{offset_s:+}s\n"))
        .map_err(|e| format!("clock file {}: {e}", file.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hears(g: &[BTreeSet<usize>], a: usize, b: usize) -> bool {
        !g[a].contains(&b) && !g[b].contains(&a)
    }

    #[test]
    fn isolating_the_leader_cuts_it_from_everyone_else_only() {
        let g = grudge(&views(Fault::IsolateLeader, 5, 2, 0));
        for other in [0, 1, 3, 4] {
            assert!(!hears(&g, 2, other));
        }
        assert!(hears(&g, 0, 4) && hears(&g, 1, 3));
    }

    #[test]
    fn halves_leave_one_majority() {
        for rand in 0..10 {
            let v = views(Fault::Halves, 5, 0, rand);
            let mut sizes: Vec<usize> = v.iter().map(BTreeSet::len).collect();
            sizes.sort();
            assert_eq!(sizes, [2, 2, 3, 3, 3], "{v:?}");
        }
    }

    #[test]
    fn the_ring_gives_every_node_a_different_majority() {
        let n = 5;
        let g = grudge(&views(Fault::Ring, n, 0, 0));
        let seen: Vec<BTreeSet<usize>> = (0..n)
            .map(|a| (0..n).filter(|&b| a == b || hears(&g, a, b)).collect())
            .collect();
        for v in &seen {
            assert_eq!(v.len(), 3, "each node hears a bare majority: {seen:?}");
        }
        let distinct: BTreeSet<_> = seen.iter().collect();
        assert_eq!(distinct.len(), n);
        // And no single node is heard by everyone.
        assert!((0..n).all(|b| (0..n).any(|a| a != b && !hears(&g, a, b))));
    }

    #[test]
    fn the_bridge_node_hears_both_halves_which_do_not_hear_each_other() {
        let v = views(Fault::Bridge, 5, 0, 0);
        let g = grudge(&v);
        let bridge = (0..5)
            .find(|&i| v[i].len() == 5)
            .expect("one node hears all");
        let others: Vec<usize> = (0..5).filter(|&i| i != bridge).collect();
        let cut = others
            .iter()
            .flat_map(|&a| others.iter().map(move |&b| (a, b)))
            .filter(|&(a, b)| a < b && !hears(&g, a, b))
            .count();
        assert_eq!(
            cut, 4,
            "the two pairs on either side cannot hear each other: {v:?}"
        );
    }

    #[test]
    fn schedules_parse_alone_and_combined_and_unknown_names_are_refused() {
        assert_eq!(
            Fault::parse_schedule("kill,pause").unwrap(),
            [vec![Fault::Kill], vec![Fault::Pause]]
        );
        assert_eq!(Fault::parse_schedule("partition").unwrap().len(), 4);
        let combined = Fault::parse_schedule("partition+clock-skew,kill").unwrap();
        assert_eq!(combined.len(), 5);
        assert_eq!(combined[0], [Fault::IsolateLeader, Fault::ClockSkew]);
        assert_eq!(combined[4], [Fault::Kill]);
        assert!(Fault::parse_schedule("halves+ring").is_err());
        assert!(Fault::parse_schedule("meteor").is_err());
        assert!(Fault::parse_schedule("").is_err());
    }
}
