//! Node configuration: command-line flags, each with an environment variable, over an
//! optional TOML file, over defaults. Validated once at start, with errors that name the
//! setting.

use crate::raft::{NodeId, NodeInfo};
use clap::Parser;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Operations applied since the last snapshot that trigger the next one. A start re-applies
/// the log after the snapshot, about 4-6 µs per operation measured (1.1 M operations in
/// 4.8-6.4 s, `scripts/bench-restart.sh`), so this bounds that part of a start to ~2 s.
pub const DEFAULT_SNAPSHOT_OPS: u64 = 400_000;
/// Entries after which openraft builds a snapshot and compacts the log (etcd's default
/// `--snapshot-count`). The operation count above already bounds what a start re-applies;
/// at 10 000 a node taking 1 500 entries/s rebuilt every 7 s, all replicas at once, and each
/// build's file writes delayed the log's fdatasync: p99 36-42 ms at half of peak with the
/// builds inside the run against 6 ms without (benches/RESULTS.md).
pub const DEFAULT_SNAPSHOT_LOGS: u64 = 100_000;
/// How fast a snapshot build writes its file, in MB/s: paced so the Raft log's fdatasyncs
/// do not queue behind the whole file (benches/RESULTS.md, tenth session). 100 MB of
/// state then takes 5 s to write, while the log keeps growing behind it.
pub const DEFAULT_SNAPSHOT_WRITE_MB_PER_S: u64 = 20;

#[derive(Debug, Clone, Parser, Default)]
#[command(name = "laundry-node", version, about = "Laundry List store node")]
pub struct Args {
    /// This node's id: a positive integer, unique in the cluster.
    #[arg(long, env = "LAUNDRY_NODE_ID")]
    pub id: Option<u64>,
    /// Directory for the Raft log, state and snapshots.
    /// Derive the id from a StatefulSet pod name: its trailing ordinal plus one
    /// (`laundry-store-0` is node 1). Instead of --id.
    #[arg(long, env = "LAUNDRY_ID_FROM_ORDINAL", conflicts_with = "id")]
    pub id_from_ordinal: Option<String>,
    /// A node whose id is not among --initial-members starts without them and waits for
    /// the leader to add it (learner, then voter): scale-up beyond the founding members.
    /// Without this flag such a configuration is refused as a likely mistake.
    #[arg(long, env = "LAUNDRY_JOIN")]
    pub join: bool,
    /// Break a guarantee on purpose, so the fault-injection suite can show it catches it,
    /// or act as an earlier release for a test. Never in production: `local-reads`
    /// answers linearizable reads from local state; `no-write-many` answers `WriteMany`
    /// with UNIMPLEMENTED, as releases before it did.
    #[arg(long, env = "LAUNDRY_UNSAFE_TEST_FAULT", value_enum, hide = true)]
    pub unsafe_test_fault: Option<TestFault>,
    #[arg(long, env = "LAUNDRY_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Listen address of the public gRPC API.
    #[arg(long, env = "LAUNDRY_CLIENT_ADDR")]
    pub client_addr: Option<SocketAddr>,
    /// Listen address of the Raft transport.
    #[arg(long, env = "LAUNDRY_PEER_ADDR")]
    pub peer_addr: Option<SocketAddr>,
    /// Listen address of the admin HTTP API (health, metrics, membership).
    #[arg(long, env = "LAUNDRY_ADMIN_ADDR")]
    pub admin_addr: Option<SocketAddr>,
    /// Bearer token that mutating admin calls must present. Without one they are refused.
    #[arg(long, env = "LAUNDRY_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Client address other nodes and clients should use (default: --client-addr).
    #[arg(long, env = "LAUNDRY_ADVERTISE_CLIENT_ADDR")]
    pub advertise_client_addr: Option<String>,
    /// Peer address other nodes should use (default: --peer-addr).
    #[arg(long, env = "LAUNDRY_ADVERTISE_PEER_ADDR")]
    pub advertise_peer_addr: Option<String>,
    /// Admin address operators should use (default: --admin-addr).
    #[arg(long, env = "LAUNDRY_ADVERTISE_ADMIN_ADDR")]
    pub advertise_admin_addr: Option<String>,
    /// Members of a new cluster: `ID=PEER_ADDR/CLIENT_ADDR[/ADMIN_ADDR],...`. The lowest id bootstraps
    /// the cluster unless a member already holds Raft state.
    #[arg(long, env = "LAUNDRY_INITIAL_MEMBERS")]
    pub initial_members: Option<String>,
    /// Build a snapshot (and compact the log) after this many entries.
    #[arg(long, env = "LAUNDRY_SNAPSHOT_LOGS")]
    pub snapshot_logs: Option<u64>,
    /// Also build a snapshot once this many operations were applied since the last one
    /// (entries vary from one operation to thousands, so an entry count alone does not
    /// bound what a restart re-applies).
    #[arg(long, env = "LAUNDRY_SNAPSHOT_OPS")]
    pub snapshot_ops: Option<u64>,
    /// Write a snapshot build's file at most this fast, in MB/s (0 = no limit), so the Raft
    /// log's fsyncs, the write path, do not wait behind it. Default 20.
    #[arg(long, env = "LAUNDRY_SNAPSHOT_WRITE_MB_PER_S")]
    pub snapshot_write_mb_per_s: Option<u64>,
    /// Entries kept in the log behind a snapshot, for slightly lagging followers.
    #[arg(long, env = "LAUNDRY_KEEP_LOGS")]
    pub keep_logs: Option<u64>,
    #[arg(long, env = "LAUNDRY_HEARTBEAT_MS")]
    pub heartbeat_ms: Option<u64>,
    #[arg(long, env = "LAUNDRY_ELECTION_MIN_MS")]
    pub election_min_ms: Option<u64>,
    #[arg(long, env = "LAUNDRY_ELECTION_MAX_MS")]
    pub election_max_ms: Option<u64>,
    /// Directory backups are written to (the NAS mount). Default: <data-dir>/backups.
    #[arg(long, env = "LAUNDRY_BACKUP_DIR")]
    pub backup_dir: Option<PathBuf>,
    /// Backups kept in the backup directory; older ones are deleted.
    #[arg(long, env = "LAUNDRY_BACKUP_RETAIN")]
    pub backup_retain: Option<usize>,
    /// Name recorded in backups and used in their file names.
    #[arg(long, env = "LAUNDRY_CLUSTER_NAME")]
    pub cluster_name: Option<String>,
    /// PEM certificate for all three ports (with SANs for every advertised address).
    #[arg(long, env = "LAUNDRY_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "LAUNDRY_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA that signs every node's certificate; peers must present one (mutual TLS).
    #[arg(long, env = "LAUNDRY_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// Run without TLS on every port. Required when no TLS files are given, so plain text
    /// is always a choice, never an accident.
    #[arg(long, env = "LAUNDRY_PLAINTEXT")]
    pub plaintext: bool,
    /// TOML file with any of the settings above (snake_case keys); flags and env win.
    #[arg(long, env = "LAUNDRY_CONFIG")]
    pub config: Option<PathBuf>,
}

/// The settings a TOML file may hold.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    id: Option<u64>,
    data_dir: Option<PathBuf>,
    client_addr: Option<SocketAddr>,
    peer_addr: Option<SocketAddr>,
    admin_addr: Option<SocketAddr>,
    admin_token: Option<String>,
    advertise_client_addr: Option<String>,
    advertise_peer_addr: Option<String>,
    advertise_admin_addr: Option<String>,
    initial_members: Option<String>,
    snapshot_logs: Option<u64>,
    snapshot_ops: Option<u64>,
    snapshot_write_mb_per_s: Option<u64>,
    keep_logs: Option<u64>,
    backup_dir: Option<PathBuf>,
    backup_retain: Option<usize>,
    cluster_name: Option<String>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_ca: Option<PathBuf>,
    plaintext: Option<bool>,
    heartbeat_ms: Option<u64>,
    election_min_ms: Option<u64>,
    election_max_ms: Option<u64>,
}

/// Deliberate bugs for the fault-injection suite (hidden flag `--unsafe-test-fault`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TestFault {
    /// Linearizable reads served from local state, without a read index.
    LocalReads,
    /// `WriteMany` answered UNIMPLEMENTED, as by a release before it (clients must fall
    /// back to one call per write).
    NoWriteMany,
}

#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub test_fault: Option<TestFault>,
    pub id: NodeId,
    pub data_dir: PathBuf,
    pub client_addr: SocketAddr,
    pub peer_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub admin_token: Option<String>,
    pub advertise: NodeInfo,
    pub initial_members: BTreeMap<NodeId, NodeInfo>,
    pub snapshot_logs: u64,
    pub snapshot_ops: u64,
    /// MB/s; 0 = no limit.
    pub snapshot_write_mb_per_s: u64,
    pub keep_logs: u64,
    /// `None` only when plain text was chosen explicitly.
    pub tls: Option<crate::tls::TlsFiles>,
    pub backup_dir: PathBuf,
    pub backup_retain: usize,
    pub cluster_name: String,
    pub heartbeat_ms: u64,
    pub election_min_ms: u64,
    pub election_max_ms: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {reason}")]
    File { path: String, reason: String },
    #[error("invalid setting {setting}: {reason}")]
    Invalid {
        setting: &'static str,
        reason: String,
    },
}

fn invalid(setting: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        setting,
        reason: reason.into(),
    }
}

impl NodeConfig {
    pub fn from_args(args: Args) -> Result<Self, ConfigError> {
        let file = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                })?;
                toml::from_str::<FileConfig>(&text).map_err(|e| ConfigError::File {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                })?
            }
            None => FileConfig::default(),
        };
        let id = match (args.id.or(file.id), &args.id_from_ordinal) {
            (Some(_), Some(_)) => {
                return Err(invalid("id", "give --id or --id-from-ordinal, not both"))
            }
            (Some(id), None) => id,
            (None, Some(name)) => ordinal_id(name)?,
            (None, None) => {
                return Err(invalid(
                    "id",
                    "required (--id or LAUNDRY_NODE_ID, or --id-from-ordinal)",
                ))
            }
        };
        if id == 0 {
            return Err(invalid("id", "must be > 0"));
        }
        let client_addr = args
            .client_addr
            .or(file.client_addr)
            .unwrap_or_else(|| ([127, 0, 0, 1], 7400).into());
        let peer_addr = args
            .peer_addr
            .or(file.peer_addr)
            .unwrap_or_else(|| ([127, 0, 0, 1], 7500).into());
        let admin_addr = args
            .admin_addr
            .or(file.admin_addr)
            .unwrap_or_else(|| ([127, 0, 0, 1], 7600).into());
        if client_addr == peer_addr || admin_addr == client_addr || admin_addr == peer_addr {
            return Err(invalid(
                "peer_addr",
                "client, peer and admin addresses must all differ",
            ));
        }
        let admin_token = args
            .admin_token
            .or(file.admin_token)
            .filter(|t| !t.is_empty());
        if let Some(t) = &admin_token {
            if t.len() < 16 || t.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(invalid(
                    "admin_token",
                    "needs at least 16 characters and no whitespace",
                ));
            }
        }
        let advertise = NodeInfo {
            peer_addr: args
                .advertise_peer_addr
                .or(file.advertise_peer_addr)
                .unwrap_or_else(|| peer_addr.to_string()),
            client_addr: args
                .advertise_client_addr
                .or(file.advertise_client_addr)
                .unwrap_or_else(|| client_addr.to_string()),
            admin_addr: args
                .advertise_admin_addr
                .or(file.advertise_admin_addr)
                .unwrap_or_else(|| admin_addr.to_string()),
        };
        let initial_members = match args.initial_members.or(file.initial_members) {
            Some(s) if !s.trim().is_empty() => parse_members(&s)?,
            _ => BTreeMap::new(),
        };
        let initial_members = if !initial_members.is_empty() && !initial_members.contains_key(&id) {
            if !args.join {
                return Err(invalid(
                    "initial_members",
                    format!(
                        "does not include this node's id {id} (add --join if this node is \
                         to join an existing cluster)"
                    ),
                ));
            }
            BTreeMap::new() // not founding: wait to be added by the leader
        } else {
            initial_members
        };
        let data_dir = args
            .data_dir
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from(format!("laundry-data/node-{id}")));
        let cluster_name = args
            .cluster_name
            .or(file.cluster_name)
            .unwrap_or_else(|| "laundry-list".into());
        if crate::inventory::command::check_id("cluster_name", &cluster_name).is_err()
            || cluster_name.contains('/')
        {
            return Err(invalid(
                "cluster_name",
                "letters, digits and -_.:@ only, at most 128 bytes",
            ));
        }
        let tls = match (
            args.tls_cert.or(file.tls_cert),
            args.tls_key.or(file.tls_key),
            args.tls_ca.or(file.tls_ca),
            args.plaintext || file.plaintext.unwrap_or(false),
        ) {
            (Some(cert), Some(key), Some(ca), false) => Some(crate::tls::TlsFiles { cert, key, ca }),
            (None, None, None, true) => None,
            (None, None, None, false) => {
                return Err(invalid(
                    "tls",
                    "no TLS configured: give --tls-cert, --tls-key and --tls-ca, or --plaintext to run unencrypted",
                ))
            }
            (_, _, _, true) => return Err(invalid("tls", "--plaintext conflicts with TLS files")),
            _ => return Err(invalid("tls", "--tls-cert, --tls-key and --tls-ca go together")),
        };
        let cfg = NodeConfig {
            test_fault: args.unsafe_test_fault,
            id,
            tls,
            backup_dir: args
                .backup_dir
                .or(file.backup_dir)
                .unwrap_or_else(|| data_dir.join("backups")),
            backup_retain: args.backup_retain.or(file.backup_retain).unwrap_or(7),
            cluster_name,
            data_dir,
            client_addr,
            peer_addr,
            admin_addr,
            admin_token,
            advertise,
            initial_members,
            snapshot_logs: args
                .snapshot_logs
                .or(file.snapshot_logs)
                .unwrap_or(DEFAULT_SNAPSHOT_LOGS),
            snapshot_ops: args
                .snapshot_ops
                .or(file.snapshot_ops)
                .unwrap_or(DEFAULT_SNAPSHOT_OPS),
            snapshot_write_mb_per_s: args
                .snapshot_write_mb_per_s
                .or(file.snapshot_write_mb_per_s)
                .unwrap_or(DEFAULT_SNAPSHOT_WRITE_MB_PER_S),
            keep_logs: args.keep_logs.or(file.keep_logs).unwrap_or(1_000),
            // Measured (benches/RESULTS.md, scripts/bench-elections.sh): no election in 3 x 60 s
            // of saturating load on 2 cores, and failover in ~1.1 s (openraft waits the
            // leader lease, = election_max, plus one election timeout).
            heartbeat_ms: args.heartbeat_ms.or(file.heartbeat_ms).unwrap_or(50),
            election_min_ms: args.election_min_ms.or(file.election_min_ms).unwrap_or(300),
            election_max_ms: args.election_max_ms.or(file.election_max_ms).unwrap_or(600),
        };
        if cfg.backup_retain == 0 {
            return Err(invalid("backup_retain", "must keep at least one backup"));
        }
        if cfg.snapshot_logs == 0 {
            return Err(invalid("snapshot_logs", "must be > 0"));
        }
        if cfg.snapshot_ops == 0 {
            return Err(invalid("snapshot_ops", "must be > 0"));
        }
        if !(cfg.heartbeat_ms > 0
            && cfg.heartbeat_ms < cfg.election_min_ms
            && cfg.election_min_ms < cfg.election_max_ms)
        {
            return Err(invalid(
                "heartbeat_ms",
                "need 0 < heartbeat_ms < election_min_ms < election_max_ms",
            ));
        }
        Ok(cfg)
    }
}

/// The node id of a StatefulSet pod: the number after the last `-`, plus one.
pub fn ordinal_id(pod_name: &str) -> Result<NodeId, ConfigError> {
    let bad = |why: &str| {
        invalid(
            "id_from_ordinal",
            format!("{pod_name:?}: {why}; expected a pod name like laundry-store-0"),
        )
    };
    let (_, ordinal) = pod_name
        .trim()
        .rsplit_once('-')
        .ok_or_else(|| bad("no '-'"))?;
    if ordinal.is_empty() || !ordinal.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad("does not end in an ordinal"));
    }
    let n: u64 = ordinal.parse().map_err(|_| bad("ordinal too large"))?;
    n.checked_add(1).ok_or_else(|| bad("ordinal too large"))
}

/// Parses `1=127.0.0.1:7501/127.0.0.1:7401[/127.0.0.1:7601],2=...`.
pub fn parse_members(s: &str) -> Result<BTreeMap<NodeId, NodeInfo>, ConfigError> {
    let mut out = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = |why: &str| {
            invalid(
                "initial_members",
                format!("{part:?}: {why}; expected ID=PEER_ADDR/CLIENT_ADDR"),
            )
        };
        let (id, addrs) = part.split_once('=').ok_or_else(|| bad("missing '='"))?;
        let id: NodeId = id
            .trim()
            .parse()
            .map_err(|_| bad("id is not a positive integer"))?;
        if id == 0 {
            return Err(bad("id must be > 0"));
        }
        let parts: Vec<&str> = addrs.split('/').collect();
        let (peer, client, admin) = match parts.as_slice() {
            [p, c] => (*p, *c, ""),
            [p, c, a] if !a.is_empty() => (*p, *c, *a),
            _ => return Err(bad("expected two or three '/'-separated addresses")),
        };
        if peer.is_empty() || client.is_empty() {
            return Err(bad("empty address"));
        }
        let node = NodeInfo {
            peer_addr: peer.to_string(),
            client_addr: client.to_string(),
            admin_addr: admin.to_string(),
        };
        if out.insert(id, node).is_some() {
            return Err(bad("duplicate id"));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_parse_and_errors_name_the_part() {
        let m = parse_members("1=127.0.0.1:7501/127.0.0.1:7401, 2=h2:7502/h2:7402").unwrap();
        assert_eq!(
            m[&2],
            NodeInfo {
                peer_addr: "h2:7502".into(),
                client_addr: "h2:7402".into(),
                admin_addr: String::new(),
            }
        );
        assert_eq!(
            parse_members("7=p:1/c:2/a:3").unwrap()[&7].admin_addr,
            "a:3"
        );
        for bad in [
            "1",
            "x=a/b",
            "0=a/b",
            "1=a",
            "1=a/b,1=c/d",
            "1=/b",
            "1=a/b/c/d",
            "1=a/b/",
        ] {
            let err = parse_members(bad).unwrap_err().to_string();
            assert!(err.contains("initial_members"), "{bad}: {err}");
        }
    }

    #[test]
    fn ids_from_pod_ordinals_and_joining_members() {
        assert_eq!(ordinal_id("laundry-store-0").unwrap(), 1);
        assert_eq!(ordinal_id("a-b-12").unwrap(), 13);
        for bad in [
            "store",
            "store-",
            "store-x",
            "store-1a",
            "store-99999999999999999999",
        ] {
            let err = ordinal_id(bad).unwrap_err().to_string();
            assert!(err.contains("id_from_ordinal"), "{bad}: {err}");
        }
        let members = "1=p1:1/c1:1,2=p2:1/c2:1,3=p3:1/c3:1".to_string();
        let args = |pod: &str, join: bool| Args {
            id_from_ordinal: Some(pod.into()),
            initial_members: Some(members.clone()),
            join,
            plaintext: true,
            ..Default::default()
        };
        let founding = NodeConfig::from_args(args("laundry-store-2", false)).unwrap();
        assert_eq!((founding.id, founding.initial_members.len()), (3, 3));
        // A fourth pod is not a founding member: refused unless it is meant to join.
        let err = NodeConfig::from_args(args("laundry-store-3", false)).unwrap_err();
        assert!(err.to_string().contains("--join"), "{err}");
        let joining = NodeConfig::from_args(args("laundry-store-3", true)).unwrap();
        assert_eq!(joining.id, 4);
        assert!(joining.initial_members.is_empty(), "waits to be added");
        // A founding member with --join still bootstraps with the others.
        let founding = NodeConfig::from_args(args("laundry-store-0", true)).unwrap();
        assert_eq!(founding.initial_members.len(), 3);
        let both = Args {
            id: Some(1),
            ..args("laundry-store-0", false)
        };
        assert!(NodeConfig::from_args(both).is_err());
    }

    #[test]
    fn flags_override_file_and_bad_values_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        std::fs::write(
            &path,
            "id = 3\nsnapshot_logs = 50\nclient_addr = \"127.0.0.1:9000\"\n",
        )
        .unwrap();
        let args = Args {
            config: Some(path.clone()),
            snapshot_logs: Some(70),
            plaintext: true,
            ..Default::default()
        };
        let cfg = NodeConfig::from_args(args).unwrap();
        assert_eq!(
            (cfg.id, cfg.snapshot_logs, cfg.client_addr.port()),
            (3, 70, 9000)
        );
        std::fs::write(&path, "id = 3\nbogus = 1\n").unwrap();
        let err = NodeConfig::from_args(Args {
            config: Some(path),
            ..Default::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("bogus"), "{err}");
        assert!(NodeConfig::from_args(Args::default())
            .unwrap_err()
            .to_string()
            .contains("id"));
    }

    #[test]
    fn plain_text_must_be_chosen_and_tls_files_go_together() {
        let base = Args {
            id: Some(1),
            ..Default::default()
        };
        let err = NodeConfig::from_args(base.clone()).unwrap_err().to_string();
        assert!(err.contains("--plaintext"), "{err}");
        let partial = Args {
            tls_cert: Some("c.pem".into()),
            ..base.clone()
        };
        assert!(NodeConfig::from_args(partial)
            .unwrap_err()
            .to_string()
            .contains("go together"));
        let both = Args {
            tls_cert: Some("c".into()),
            tls_key: Some("k".into()),
            tls_ca: Some("a".into()),
            plaintext: true,
            ..base.clone()
        };
        assert!(NodeConfig::from_args(both)
            .unwrap_err()
            .to_string()
            .contains("conflicts"));
        assert!(NodeConfig::from_args(Args {
            plaintext: true,
            ..base
        })
        .unwrap()
        .tls
        .is_none());
    }
}
