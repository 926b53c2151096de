//! The `laundry-node` command line for tests: every harness (cluster tests, API tests, the
//! fault-injection campaigns) starts nodes with the same flags, so a change to them is made
//! once.

use std::path::Path;

/// Fast Raft timers for tests: elections settle quickly.
pub const FAST_TIMERS: [&str; 6] = [
    "--heartbeat-ms",
    "50",
    "--election-min-ms",
    "300",
    "--election-max-ms",
    "600",
];

/// One node's id and its client, peer and admin addresses (host:port).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeAddrs {
    pub id: u64,
    pub client: String,
    pub peer: String,
    pub admin: String,
}

impl NodeAddrs {
    /// The node's `--initial-members` entry: `ID=PEER/CLIENT/ADMIN`.
    pub fn member(&self) -> String {
        format!("{}={}/{}/{}", self.id, self.peer, self.client, self.admin)
    }
}

/// The `--initial-members` value for `nodes`.
pub fn members(nodes: &[NodeAddrs]) -> String {
    nodes
        .iter()
        .map(NodeAddrs::member)
        .collect::<Vec<_>>()
        .join(",")
}

/// How a node secures its ports.
#[derive(Debug, Clone)]
pub enum Security<'a> {
    Plaintext,
    Tls {
        cert: &'a Path,
        key: &'a Path,
        ca: &'a Path,
    },
}

/// The arguments of one node: identity, data dir, addresses, security, founding members
/// (`None`: the node waits to be added), then the fast test timers. Callers append their
/// own (admin token, extra flags).
pub fn node_args(
    node: &NodeAddrs,
    data_dir: &Path,
    security: &Security<'_>,
    initial_members: Option<&str>,
) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "--id".into(),
        node.id.to_string(),
        "--data-dir".into(),
        data_dir.display().to_string(),
        "--client-addr".into(),
        node.client.clone(),
        "--peer-addr".into(),
        node.peer.clone(),
        "--admin-addr".into(),
        node.admin.clone(),
    ];
    match security {
        Security::Plaintext => args.push("--plaintext".into()),
        Security::Tls { cert, key, ca } => {
            for (flag, path) in [("--tls-cert", cert), ("--tls-key", key), ("--tls-ca", ca)] {
                args.push(flag.into());
                args.push(path.display().to_string());
            }
        }
    }
    if let Some(m) = initial_members {
        args.push("--initial-members".into());
        args.push(m.into());
    }
    args.extend(FAST_TIMERS.iter().map(|s| s.to_string()));
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(id: u64) -> NodeAddrs {
        NodeAddrs {
            id,
            client: format!("c{id}:1"),
            peer: format!("p{id}:2"),
            admin: format!("a{id}:3"),
        }
    }

    #[test]
    fn members_and_arguments() {
        assert_eq!(members(&[n(1), n(2)]), "1=p1:2/c1:1/a1:3,2=p2:2/c2:1/a2:3");
        let args = node_args(&n(1), Path::new("/d"), &Security::Plaintext, Some("M"));
        let joined = args.join(" ");
        assert!(joined.starts_with("--id 1 --data-dir /d --client-addr c1:1 --peer-addr p1:2"));
        assert!(joined.contains("--plaintext --initial-members M --heartbeat-ms 50"));
        let tls = Security::Tls {
            cert: Path::new("c.pem"),
            key: Path::new("k.pem"),
            ca: Path::new("ca.pem"),
        };
        let joined = node_args(&n(2), Path::new("/d"), &tls, None).join(" ");
        assert!(joined.contains("--tls-cert c.pem --tls-key k.pem --tls-ca ca.pem"));
        assert!(!joined.contains("--plaintext") && !joined.contains("--initial-members"));
    }
}
