//! Free ports for test processes. A port from bind(0) comes from the kernel's ephemeral
//! range, which outgoing connections (clients, peers) also take their source ports from,
//! so it could be gone by the time a child process binds it: ports here come from below
//! that range, spread per test process so concurrent test binaries rarely meet.

use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};

/// Lowest port handed out.
const LOW: u32 = 10_000;

/// A port free now on 127.0.0.1, below the ephemeral range. Panics (a test failure) when
/// none is free.
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let ephemeral_low: u32 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|p| p.parse().ok()))
        .unwrap_or(32_768);
    let span = ephemeral_low.saturating_sub(LOW).max(1_000);
    let _ = NEXT.compare_exchange(
        0,
        1 + std::process::id() * 7_919 % span,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    for _ in 0..span {
        let port = (LOW + NEXT.fetch_add(1, Ordering::Relaxed) % span) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port below the ephemeral range");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_bindable_and_below_the_ephemeral_range() {
        let ports: std::collections::BTreeSet<u16> = (0..20).map(|_| free_port()).collect();
        assert_eq!(ports.len(), 20);
        for p in ports {
            assert!(u32::from(p) >= LOW);
            TcpListener::bind(("127.0.0.1", p)).unwrap();
        }
    }
}
