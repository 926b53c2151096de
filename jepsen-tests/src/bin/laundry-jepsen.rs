//! `laundry-jepsen`: the fault-injection suite's command line. So far one subcommand,
//! `hosts-check`, which proves the host layer works on this machine: it creates N
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
        Some("probe-listen") => probe_listen(&args[2]),
        Some("probe-connect") => probe_connect(&args[2]),
        _ => Err("usage: laundry-jepsen hosts-check [N]".to_string()),
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
    std::thread::sleep(Duration::from_millis(300));
    let mut checked = 0;
    let mut outcome = Ok(());
    'outer: for i in 0..n {
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
    let left = hosts.leftovers();
    outcome?;
    if !left.is_empty() {
        return Err(format!("teardown left {left:?}"));
    }
    println!("hosts-check: {n} hosts on {}, {checked} TCP connections ok (control->host and host->host); torn down, nothing left", hosts.bridge);
    Ok(())
}
