//! `laundry-jepsen`: the fault-injection suite's command line. `register` runs a campaign
//! (see its doc comment); `hosts-check` proves the host layer works on this machine: it creates N
//! namespaced hosts, checks TCP from the control side to every host and between every pair
//! of hosts, tears them down and checks nothing is left. The probe runs this same binary
//! inside the namespaces (`probe-listen`, `probe-connect`).

use laundry_jepsen::hosts::Hosts;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

const PROBE_PORT: u16 = 7700;
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let result = match args.get(1).map(String::as_str) {
        Some("hosts-check") => hosts_check(args.get(2).and_then(|n| n.parse().ok()).unwrap_or(5)),
        Some("register") => register(&args[2..]),
        Some("inventory") => inventory(&args[2..]),
        Some("probe-listen") => probe_listen(&args[2]),
        Some("probe-connect") => probe_connect(&args[2]),
        _ => Err(
            "usage: laundry-jepsen hosts-check [N] | register|inventory [--duration-s S] [--nodes N] \
             [--nemesis kill,pause,partition,...] [--period-s S] [--node-fault local-reads] [--snapshot-logs N] \
             [--expect valid|invalid] [--results DIR]"
                .to_string(),
        ),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("laundry-jepsen: {e}");
            std::process::ExitCode::from(2)
        }
    }
}

/// Accepts connections and answers each with "ok" until killed (at most 64 connections).
fn probe_listen(addr: &str) -> Result<(), String> {
    let listener = TcpListener::bind(addr).map_err(|e| format!("bind {addr}: {e}"))?;
    for conn in listener.incoming().take(64) {
        let mut c = conn.map_err(|e| e.to_string())?;
        let _ = c.write_all(b"ok");
    }
    Ok(())
}

fn probe_connect(addr: &str) -> Result<(), String> {
    let sa: SocketAddr = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
    let mut c = TcpStream::connect_timeout(&sa, PROBE_TIMEOUT)
        .map_err(|e| format!("connect {addr}: {e}"))?;
    c.set_read_timeout(Some(PROBE_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let mut buf = [0u8; 2];
    c.read_exact(&mut buf)
        .map_err(|e| format!("read from {addr}: {e}"))?;
    if &buf == b"ok" {
        Ok(())
    } else {
        Err(format!("{addr} answered {buf:?}"))
    }
}

fn hosts_check(n: usize) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let exe = exe.to_str().ok_or("non-UTF-8 executable path")?.to_string();
    let mut hosts = Hosts::create(n, std::process::id()).map_err(|e| e.to_string())?;
    let mut listeners = Vec::new();
    for i in 0..n {
        let addr = format!("{}:{PROBE_PORT}", hosts.hosts[i].addr);
        let child = hosts
            .command(i, &exe)
            .args(["probe-listen", &addr])
            .spawn()
            .map_err(|e| e.to_string())?;
        listeners.push(child);
    }
    // Wait (bounded) until every listener answers, rather than sleeping and hoping.
    let mut outcome = Ok(());
    for i in 0..n {
        let target = format!("{}:{PROBE_PORT}", hosts.hosts[i].addr);
        let deadline = std::time::Instant::now() + PROBE_TIMEOUT;
        while outcome.is_ok() && probe_connect(&target).is_err() {
            if std::time::Instant::now() > deadline {
                outcome = Err(format!("host {i}'s probe listener never came up"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let mut checked = 0;
    'outer: for i in (0..n).filter(|_| outcome.is_ok()) {
        let target = format!("{}:{PROBE_PORT}", hosts.hosts[i].addr);
        if let Err(e) = probe_connect(&target) {
            outcome = Err(format!("control -> host {i}: {e}"));
            break;
        }
        checked += 1;
        for j in (0..n).filter(|j| *j != i) {
            let status = hosts
                .command(j, &exe)
                .args(["probe-connect", &target])
                .status()
                .map_err(|e| e.to_string())?;
            if !status.success() {
                outcome = Err(format!("host {j} -> host {i} failed"));
                break 'outer;
            }
            checked += 1;
        }
    }
    for mut l in listeners {
        let _ = l.kill();
        let _ = l.wait();
    }
    hosts.teardown().map_err(|e| e.to_string())?;
    // The kernel finishes some deletions asynchronously: allow it up to 2 s.
    let mut left = hosts.leftovers();
    for _ in 0..20 {
        if left.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        left = hosts.leftovers();
    }
    outcome?;
    if !left.is_empty() {
        return Err(format!("teardown left {left:?}"));
    }
    println!("hosts-check: {n} hosts on {}, {checked} TCP connections ok (control->host and host->host); torn down, nothing left", hosts.bridge);
    Ok(())
}

/// Flags every campaign takes: `[--duration-s 20] [--nodes 5] [--nemesis kill]
/// [--period-s 4] [--results DIR] [--node-bin PATH] [--node-fault local-reads]
/// [--snapshot-logs N]
/// [--expect valid|invalid] [--recovery-bound-s 10]`. Nodes run in namespaced hosts, 5
/// client processes (each its own client, preferring a different node), the nemeses in
/// turn (kill, pause, isolate-leader, halves, ring, bridge; `partition` = the four
/// shapes, `membership`, `clock-skew`, `clock-strobe`, `clock` = both; `a+b` applies
/// faults together, e.g. `partition+clock-skew`). Each run writes DIR/history.jsonl, DIR/results.json (verdict, counterexample,
/// faults, recovery) and DIR/plot.svg. Exit 0 when the verdict is the expected one and,
/// for `valid`, the cluster took a write within the recovery bound after the last heal.
struct Campaign {
    cfg: laundry_jepsen::campaign::Config,
    expect_valid: bool,
    title: String,
}

fn parse_campaign(args: &[String], workload: &str) -> Result<Campaign, String> {
    use laundry_jepsen::{campaign, nemesis};
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let number = |name: &str, default: u64| -> Result<u64, String> {
        flag(name)
            .map(|s| s.parse().map_err(|_| format!("bad {name} {s}")))
            .transpose()
            .map(|v| v.unwrap_or(default))
    };
    let duration_s = number("--duration-s", 20)?;
    let nodes = number("--nodes", 5)? as usize;
    let period_s = number("--period-s", 4)?;
    let recovery_s = number("--recovery-bound-s", 10)?;
    if !(1..=3_600).contains(&duration_s) || !(1..=120).contains(&period_s) {
        return Err("--duration-s 1..=3600 and --period-s 1..=120".into());
    }
    let faults =
        nemesis::Fault::parse_schedule(&flag("--nemesis").unwrap_or_else(|| "kill".into()))?;
    let all = || faults.iter().flatten();
    if nodes < 3 && all().any(|f| f.is_partition() || *f == nemesis::Fault::Membership) {
        return Err("partitions and membership changes need at least 3 nodes".into());
    }
    if all().any(|f| f.is_partition()) && !nemesis::nft_available() {
        return Err("partitions need nft (apt-get install nftables)".into());
    }
    if all().any(|f| f.is_clock()) && !std::path::Path::new(nemesis::FAKETIME_LIB).exists() {
        return Err(format!(
            "clock faults need {} (apt-get install faketime)",
            nemesis::FAKETIME_LIB
        ));
    }
    let expect_valid = match flag("--expect").as_deref() {
        None | Some("valid") => true,
        Some("invalid") => false,
        Some(other) => return Err(format!("--expect valid|invalid, not {other}")),
    };
    let mut node_args = match flag("--node-fault") {
        None => Vec::new(),
        Some(f) => vec!["--unsafe-test-fault".to_string(), f],
    };
    if let Some(n) = flag("--snapshot-logs") {
        // Frequent snapshots, so kills restart nodes from a snapshot plus the log after it
        // and lagging nodes catch up by snapshot install, not only by log replay.
        let n: u64 = n
            .parse()
            .ok()
            .filter(|n| (10..=1_000_000).contains(n))
            .ok_or_else(|| format!("--snapshot-logs 10..=1000000, not {n}"))?;
        node_args.extend([
            "--snapshot-logs".to_string(),
            n.to_string(),
            "--keep-logs".to_string(),
            (n / 4).to_string(),
        ]);
    }
    let results = std::path::PathBuf::from(
        flag("--results")
            .unwrap_or_else(|| format!("jepsen-results/{workload}-{}", std::process::id())),
    );
    let node_bin = match flag("--node-bin") {
        Some(p) => std::path::PathBuf::from(p),
        None => std::env::current_exe()
            .map_err(|e| e.to_string())?
            .with_file_name("laundry-node"),
    };
    if !node_bin.exists() {
        return Err(format!(
            "{} not found: build it (cargo build -p laundry-node) or pass --node-bin",
            node_bin.display()
        ));
    }
    std::fs::create_dir_all(&results).map_err(|e| e.to_string())?;
    let results = results.canonicalize().map_err(|e| e.to_string())?;
    let cfg = campaign::Config {
        nodes,
        processes: 5,
        keys: 3,
        duration: Duration::from_secs(duration_s),
        nemesis_period: Duration::from_secs(period_s),
        faults: faults.clone(),
        recovery_bound: Duration::from_secs(recovery_s),
        node_bin,
        node_args: node_args.clone(),
        results: results.clone(),
    };
    let title = format!(
        "{workload}, {nodes} nodes, nemeses {faults:?}{}",
        if node_args.is_empty() {
            String::new()
        } else {
            format!(", nodes run with {}", node_args.join(" "))
        }
    );
    Ok(Campaign {
        cfg,
        expect_valid,
        title,
    })
}

/// Runs a campaign's cluster and workload on a fresh set of hosts.
fn with_cluster<T>(
    cfg: &laundry_jepsen::campaign::Config,
    run: impl for<'a> FnOnce(
        &'a laundry_jepsen::campaign::Config,
        &'a mut laundry_jepsen::campaign::Cluster,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<T, String>> + 'a>,
    >,
) -> Result<T, String> {
    use laundry_jepsen::campaign;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        // The handlers go in before any host or node exists: a signal that arrives while
        // they are being set up is held until the run below starts, which then stops at
        // once, still tearing everything down (the default action would kill only us).
        let signals = StopSignals::install();
        let hosts = Hosts::create(cfg.nodes, std::process::id()).map_err(|e| e.to_string())?;
        let mut cluster = campaign::Cluster::start(
            hosts,
            &cfg.node_bin,
            &cfg.node_args,
            &cfg.results,
            cfg.faults.iter().flatten().any(|f| f.is_clock()),
        )
        .map_err(|e| e.to_string())?;
        // Stopped from outside (SIGTERM, or ^C), the run is abandoned but the cluster is
        // still dropped: its nodes are killed and its namespaces torn down, instead of
        // dying with the process and being left running.
        let out = tokio::select! {
            out = run(cfg, &mut cluster) => out,
            signal = signals.received() => Err(format!(
                "stopped by {signal}; the nodes were killed and the hosts torn down"
            )),
        };
        drop(cluster);
        out
    })
}

/// SIGTERM and SIGINT handlers; `None` if they could not be installed (a run then goes on
/// as before, and a signal ends the process the default way).
struct StopSignals(Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>);

impl StopSignals {
    fn install() -> Self {
        use tokio::signal::unix::{signal, SignalKind};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(term), Ok(int)) => StopSignals(Some((term, int))),
            _ => StopSignals(None),
        }
    }

    /// Resolves with the signal's name once one has arrived since `install`; never
    /// without handlers.
    async fn received(mut self) -> &'static str {
        match &mut self.0 {
            Some((term, int)) => tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            },
            None => std::future::pending().await,
        }
    }
}

fn write_history(
    results: &std::path::Path,
    events: &[laundry_jepsen::history::Event],
) -> Result<(), String> {
    let lines: Vec<String> = events
        .iter()
        .map(|e| serde_json::to_string(e).unwrap_or_default())
        .collect();
    std::fs::write(results.join("history.jsonl"), lines.join("\n") + "\n")
        .map_err(|e| e.to_string())
}

/// results.json and plot.svg of a run.
fn write_outputs(
    results: &std::path::Path,
    doc: &serde_json::Value,
    title: &str,
    events: &[laundry_jepsen::history::Event],
    faults: &[laundry_jepsen::campaign::FaultInterval],
) -> Result<(), String> {
    std::fs::write(
        results.join("results.json"),
        serde_json::to_vec_pretty(doc).unwrap_or_default(),
    )
    .map_err(|e| e.to_string())?;
    std::fs::write(
        results.join("plot.svg"),
        laundry_jepsen::plot::svg(title, events, faults),
    )
    .map_err(|e| e.to_string())
}

/// `register`: CAS registers, checked for linearizability.
fn register(args: &[String]) -> Result<(), String> {
    use laundry_jepsen::{campaign, history, linearizability};
    let Campaign {
        cfg,
        expect_valid,
        title,
    } = parse_campaign(args, "register")?;
    let results = cfg.results.clone();
    let outcome = with_cluster(&cfg, |cfg, cluster| {
        Box::pin(campaign::run_register(cfg, cluster))
    })?;
    let events = &outcome.events;
    write_history(&results, events)?;
    let ops = history::operations(events).map_err(|e| e.to_string())?;
    let report = linearizability::check(&ops, 20_000_000);
    let count = |kind| events.iter().filter(|e| e.kind == kind).count();
    let (oks, infos) = (
        count(history::EventType::Ok),
        count(history::EventType::Info),
    );
    let keys: serde_json::Map<String, serde_json::Value> = report
        .keys
        .iter()
        .map(|(k, v)| {
            let v = match v {
                linearizability::KeyVerdict::Linearizable => serde_json::json!({"valid": true}),
                linearizability::KeyVerdict::Unknown(why) => serde_json::json!({"valid": null, "why": why}),
                linearizability::KeyVerdict::NotLinearizable { prefix, culprit } => serde_json::json!({
                    "valid": false,
                    "culprit": format!("{culprit:?}"),
                    "counterexample": prefix.iter().map(|o| format!("{o:?}")).collect::<Vec<_>>(),
                }),
            };
            (k.clone(), v)
        })
        .collect();
    let recovery_ms = outcome.recovery.as_ref().ok().map(|d| d.as_millis() as u64);
    let doc = serde_json::json!({
        "workload": "register",
        "nodes": cfg.nodes,
        "nemeses": cfg.faults,
        "period_s": cfg.nemesis_period.as_secs(),
        "node_args": cfg.node_args,
        "events": events.len(), "ok": oks, "info": infos,
        "valid": report.valid,
        "keys": keys,
        "faults": outcome.faults,
        "recovery_ms": recovery_ms,
        "recovery_error": outcome.recovery.as_ref().err(),
        "recovery_bound_ms": cfg.recovery_bound.as_millis() as u64,
    });
    write_outputs(&results, &doc, &title, events, &outcome.faults)?;
    println!(
        "register: {} events ({oks} ok, {infos} indeterminate), {} faults; linearizable: {:?}; recovery: {}; results in {}",
        events.len(),
        outcome.faults.len(),
        report.valid,
        recovery_ms.map(|m| format!("{m} ms")).unwrap_or_else(|| "none".into()),
        results.display()
    );
    match (report.valid, expect_valid) {
        (Some(true), true) => outcome.recovery.map(|_| ()),
        (Some(false), false) => {
            println!("register: the planted fault was caught (as expected)");
            Ok(())
        }
        (Some(false), true) => Err("history is NOT linearizable (see results.json)".into()),
        (Some(true), false) => {
            Err("expected the checker to find a violation, but the history is linearizable".into())
        }
        (None, _) => Err("checker could not decide (budget); see results.json".into()),
    }
}

/// `inventory`: receive / ship / transfer / reserve / commit / release with idempotency
/// keys and retries; every replica's end state checked against the brief's rules.
fn inventory(args: &[String]) -> Result<(), String> {
    use laundry_jepsen::{inventory, inventory_workload};
    let Campaign {
        cfg,
        expect_valid,
        title,
    } = parse_campaign(args, "inventory")?;
    let results = cfg.results.clone();
    let outcome = with_cluster(&cfg, |cfg, cluster| {
        Box::pin(inventory_workload::run(cfg, cluster))
    })?;
    write_history(&results, &outcome.events)?;
    let report = inventory::check(&outcome.acks, &outcome.replicas);
    let watch_ok = outcome.watchers.iter().all(|w| w.violation.is_none());
    let valid = report.valid && watch_ok;
    let count = |kind| outcome.events.iter().filter(|e| e.kind == kind).count();
    let (oks, fails, infos) = (
        count(laundry_jepsen::history::EventType::Ok),
        count(laundry_jepsen::history::EventType::Fail),
        count(laundry_jepsen::history::EventType::Info),
    );
    let recovery_ms = outcome.recovery.as_ref().ok().map(|d| d.as_millis() as u64);
    let movements = outcome
        .replicas
        .first()
        .map(|r| r.movements.len())
        .unwrap_or(0);
    let doc = serde_json::json!({
        "workload": "inventory",
        "nodes": cfg.nodes,
        "nemeses": cfg.faults,
        "period_s": cfg.nemesis_period.as_secs(),
        "node_args": cfg.node_args,
        "operations": {"ok": oks, "refused": fails, "indeterminate": infos},
        "acknowledged": outcome.acks.len(),
        "replicas": outcome.replicas.len(),
        "ledger_movements": movements,
        "valid": valid,
        "violations": report.violations,
        "watchers": outcome.watchers,
        "faults": outcome.faults,
        "recovery_ms": recovery_ms,
        "recovery_error": outcome.recovery.as_ref().err(),
        "recovery_bound_ms": cfg.recovery_bound.as_millis() as u64,
    });
    write_outputs(&results, &doc, &title, &outcome.events, &outcome.faults)?;
    println!(
        "inventory: {oks} ok, {fails} refused, {infos} indeterminate; {} faults; {} replicas with {movements} movements each; watchers saw {:?}; valid: {}{}; recovery: {}; results in {}",
        outcome.faults.len(),
        outcome.replicas.len(),
        outcome.watchers.iter().map(|w| w.received).collect::<Vec<_>>(),
        valid,
        if valid { String::new() } else { format!(" ({} rule violations, watchers ok: {watch_ok})", report.violations.len()) },
        recovery_ms.map(|m| format!("{m} ms")).unwrap_or_else(|| "none".into()),
        results.display()
    );
    match (valid, expect_valid) {
        (true, true) => outcome.recovery.map(|_| ()),
        (false, false) => {
            println!("inventory: the planted fault was caught (as expected)");
            Ok(())
        }
        (false, true) => Err("inventory rules violated (see results.json)".into()),
        (true, false) => Err("expected a violation, but every rule held".into()),
    }
}
