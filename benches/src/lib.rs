//! Benchmarks and the load generator for Laundry List.
//!
//! - `benches/`: criterion micro-benchmarks (apply path, log append with group commit,
//!   snapshot build/install, request codecs). `cargo bench -p laundry-benches`.
//! - `laundry-bench` (`src/bin`): a closed-loop load generator against a running cluster.
//!   This library holds its pieces that are worth testing: the operation mix and the
//!   latency report.

/// Generated client for the etcd KV subset in `proto/etcd_kv.proto`.
pub mod etcd {
    tonic::include_proto!("etcdserverpb");
}

use hdrhistogram::Histogram;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The operations the load generator issues.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum OpKind {
    /// A single-line `Adjust` (write).
    Adjust,
    /// A `Transfer` between two warehouses (write).
    Transfer,
    /// An unconditional single-line write: `Adjust +1` on Laundry List, a blind `Put` on
    /// etcd.
    Put,
    /// `Reserve` then `CommitReservation` (two writes, timed together).
    ReserveCommit,
    /// `GetStock`, linearizable (read index on the leader).
    Read,
    /// `GetStock`, stale (any node's applied state).
    StaleRead,
}

impl OpKind {
    pub const ALL: [OpKind; 6] = [
        OpKind::Adjust,
        OpKind::Transfer,
        OpKind::Put,
        OpKind::ReserveCommit,
        OpKind::Read,
        OpKind::StaleRead,
    ];

    pub fn name(self) -> &'static str {
        match self {
            OpKind::Adjust => "adjust",
            OpKind::Transfer => "transfer",
            OpKind::Put => "put",
            OpKind::ReserveCommit => "reserve+commit",
            OpKind::Read => "read",
            OpKind::StaleRead => "stale-read",
        }
    }

    fn key(self) -> &'static str {
        match self {
            OpKind::ReserveCommit => "reserve",
            OpKind::StaleRead => "stale",
            k => k.name(),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("bad --mix {0:?}: expected e.g. adjust=40,transfer=30,reserve=10,read=15,stale=5")]
pub struct MixError(pub String);

/// Weighted operation mix.
#[derive(Debug, Clone, PartialEq)]
pub struct Mix {
    weights: Vec<(OpKind, u32)>,
    total: u32,
}

impl Mix {
    pub fn parse(s: &str) -> Result<Self, MixError> {
        let err = || MixError(s.to_string());
        let mut weights = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, w) = part.split_once('=').ok_or_else(err)?;
            let kind = OpKind::ALL
                .into_iter()
                .find(|o| o.key() == k.trim())
                .ok_or_else(err)?;
            let w: u32 = w.trim().parse().map_err(|_| err())?;
            if w > 0 {
                weights.push((kind, w));
            }
        }
        let total = weights.iter().map(|(_, w)| w).sum();
        if total == 0 {
            return Err(err());
        }
        Ok(Mix { weights, total })
    }

    /// The weight of `kind` in the mix (0 if absent).
    pub fn weight(&self, kind: OpKind) -> u32 {
        self.weights
            .iter()
            .filter(|(k, _)| *k == kind)
            .map(|(_, w)| *w)
            .sum()
    }

    /// The operation for a uniformly random `r`.
    pub fn pick(&self, r: u64) -> OpKind {
        let mut x = (r % self.total as u64) as u32;
        for (k, w) in &self.weights {
            if x < *w {
                return *k;
            }
            x -= w;
        }
        unreachable!("x < total")
    }
}

/// Per-operation latency histograms (microseconds, 1 µs to 60 s, 3 significant digits)
/// and error counts.
#[derive(Default)]
pub struct Report {
    pub latency_us: BTreeMap<OpKind, Histogram<u64>>,
    pub errors: BTreeMap<OpKind, u64>,
}

impl Report {
    pub fn record(&mut self, kind: OpKind, latency: Duration, ok: bool) {
        if !ok {
            *self.errors.entry(kind).or_default() += 1;
            return;
        }
        let h = self
            .latency_us
            .entry(kind)
            .or_insert_with(|| Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds"));
        h.saturating_record(latency.as_micros().clamp(1, 60_000_000) as u64);
    }

    pub fn merge(&mut self, other: &Report) {
        for (k, h) in &other.latency_us {
            let mine = self.latency_us.entry(*k).or_insert_with(|| {
                Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds")
            });
            mine.add(h).expect("same bounds");
        }
        for (k, e) in &other.errors {
            *self.errors.entry(*k).or_default() += e;
        }
    }

    /// All successful operations in one histogram.
    pub fn total(&self) -> Histogram<u64> {
        let mut all = Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
        for h in self.latency_us.values() {
            all.add(h).expect("same bounds");
        }
        all
    }

    fn row(name: &str, h: &Histogram<u64>, errors: u64, secs: f64) -> serde_json::Value {
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        serde_json::json!({
            "op": name, "ok": h.len(), "errors": errors, "ops_per_s": h.len() as f64 / secs,
            "p50_ms": ms(0.5), "p90_ms": ms(0.9), "p99_ms": ms(0.99), "p999_ms": ms(0.999), "max_ms": h.max() as f64 / 1000.0,
        })
    }

    /// Rows per operation plus a total, as JSON.
    pub fn to_json(&self, elapsed: Duration) -> serde_json::Value {
        let secs = elapsed.as_secs_f64().max(1e-9);
        let mut rows: Vec<serde_json::Value> = self
            .latency_us
            .iter()
            .map(|(k, h)| Self::row(k.name(), h, self.errors.get(k).copied().unwrap_or(0), secs))
            .collect();
        rows.push(Self::row(
            "total",
            &self.total(),
            self.errors.values().sum(),
            secs,
        ));
        serde_json::Value::Array(rows)
    }

    /// A plain-text table of `to_json`.
    pub fn table(&self, elapsed: Duration) -> String {
        let mut out = format!(
            "{:<15} {:>9} {:>7} {:>10} {:>8} {:>8} {:>8} {:>8} {:>8}\n",
            "op", "ok", "errors", "ops/s", "p50 ms", "p90 ms", "p99 ms", "p99.9", "max ms"
        );
        for r in self.to_json(elapsed).as_array().into_iter().flatten() {
            out.push_str(&format!(
                "{:<15} {:>9} {:>7} {:>10.0} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2}\n",
                r["op"].as_str().unwrap_or(""),
                r["ok"].as_u64().unwrap_or(0),
                r["errors"].as_u64().unwrap_or(0),
                r["ops_per_s"].as_f64().unwrap_or(0.0),
                r["p50_ms"].as_f64().unwrap_or(0.0),
                r["p90_ms"].as_f64().unwrap_or(0.0),
                r["p99_ms"].as_f64().unwrap_or(0.0),
                r["p999_ms"].as_f64().unwrap_or(0.0),
                r["max_ms"].as_f64().unwrap_or(0.0),
            ));
        }
        out
    }
}

/// The open-loop schedule: releases operation k at `started + k / rate_per_s` to
/// `workers[k mod workers.len()]`, sending that instant so the worker times the operation
/// from it (an operation held up behind a slow one still counts its wait). Runs on its own
/// thread: a thread's sleep wakes within tens of microseconds, where tokio's timer fires on
/// whole milliseconds. Bounded: stops after `releases` or at `deadline`, then drops the
/// senders so the workers finish.
pub fn release_schedule(
    started: Instant,
    deadline: Instant,
    rate_per_s: u64,
    releases: u64,
    workers: Vec<tokio::sync::mpsc::UnboundedSender<Instant>>,
) {
    assert!(rate_per_s > 0 && !workers.is_empty());
    let period = Duration::from_secs_f64(1.0 / rate_per_s as f64);
    for k in 0..releases {
        let at = started + period.mul_f64(k as f64);
        if at >= deadline {
            break;
        }
        if let Some(wait) = at.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        // A worker that ended early (its op budget spent) has dropped its receiver.
        let _ = workers[(k % workers.len() as u64) as usize].send(at);
    }
}

/// Width of a [`SlowWindows`] window.
pub const SLOW_WINDOW_MS: u64 = 100;
/// Windows a [`SlowWindows`] keeps (an hour of 100 ms windows); slow operations past the
/// last are only counted, so a long run cannot grow it without bound.
pub const MAX_SLOW_WINDOWS: usize = 36_000;

/// When the slow operations happened: per 100 ms window since the run's start, how many
/// operations took at least the threshold and the longest of them. A latency percentile
/// says how many writes were slow; this says when, to line them up with node logs (a
/// snapshot build, a log purge, an election).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SlowWindows {
    /// Operations at least this long are counted.
    pub threshold: Duration,
    /// Window index → (operations, longest in µs).
    pub windows: BTreeMap<u64, (u64, u64)>,
    /// Slow operations that fell in no kept window (the map was full).
    pub dropped: u64,
}

impl SlowWindows {
    pub fn new(threshold: Duration) -> SlowWindows {
        SlowWindows {
            threshold,
            ..SlowWindows::default()
        }
    }

    /// Counts an operation that started `offset` after the run began and took `latency`.
    pub fn record(&mut self, offset: Duration, latency: Duration) {
        if latency < self.threshold {
            return;
        }
        let window = offset.as_millis() as u64 / SLOW_WINDOW_MS;
        let latency_us = latency.as_micros().min(u64::MAX as u128) as u64;
        if !self.windows.contains_key(&window) && self.windows.len() >= MAX_SLOW_WINDOWS {
            self.dropped += 1;
            return;
        }
        let (count, max_us) = self.windows.entry(window).or_default();
        *count += 1;
        *max_us = (*max_us).max(latency_us);
        debug_assert!(self.windows.len() <= MAX_SLOW_WINDOWS);
    }

    pub fn merge(&mut self, other: &SlowWindows) {
        for (window, (count, max_us)) in &other.windows {
            if !self.windows.contains_key(window) && self.windows.len() >= MAX_SLOW_WINDOWS {
                self.dropped += count;
                continue;
            }
            let (c, m) = self.windows.entry(*window).or_default();
            *c += count;
            *m = (*m).max(*max_us);
        }
        self.dropped += other.dropped;
    }

    /// One line per window: its start in seconds since the run began, the count and the
    /// longest.
    pub fn table(&self) -> String {
        let mut out = format!(
            "operations of {} ms or more, by {SLOW_WINDOW_MS} ms window from the start:\n",
            self.threshold.as_millis()
        );
        for (window, (count, max_us)) in &self.windows {
            out.push_str(&format!(
                "  at {:>7.1} s  {count:>6} slow  longest {:.2} ms\n",
                (window * SLOW_WINDOW_MS) as f64 / 1000.0,
                *max_us as f64 / 1000.0
            ));
        }
        if self.windows.is_empty() {
            out.push_str("  none\n");
        }
        if self.dropped > 0 {
            out.push_str(&format!(
                "  ({} more past the last kept window)\n",
                self.dropped
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mix_parses_and_picks_in_proportion() {
        let m = Mix::parse("adjust=3, read=1").unwrap();
        let picks: Vec<OpKind> = (0..8).map(|r| m.pick(r)).collect();
        assert_eq!(picks.iter().filter(|k| **k == OpKind::Adjust).count(), 6);
        assert_eq!(picks.iter().filter(|k| **k == OpKind::Read).count(), 2);
        for bad in ["", "adjust", "adjust=x", "bogus=1", "adjust=0"] {
            assert!(Mix::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn report_percentiles_and_errors() {
        let mut a = Report::default();
        for ms in 1..=100u64 {
            a.record(OpKind::Adjust, Duration::from_millis(ms), true);
        }
        a.record(OpKind::Adjust, Duration::from_millis(1), false);
        let mut b = Report::default();
        b.record(OpKind::Read, Duration::from_millis(5), true);
        a.merge(&b);
        let rows = a.to_json(Duration::from_secs(1));
        let adjust = &rows[0];
        assert_eq!(adjust["ok"], 100);
        assert_eq!(adjust["errors"], 1);
        assert!(
            (adjust["p50_ms"].as_f64().unwrap() - 50.0).abs() < 0.5,
            "{adjust}"
        );
        assert!(
            (adjust["p99_ms"].as_f64().unwrap() - 99.0).abs() < 0.5,
            "{adjust}"
        );
        assert_eq!(rows.as_array().unwrap().last().unwrap()["ok"], 101);
        assert!(a.table(Duration::from_secs(1)).contains("adjust"));
    }

    #[test]
    fn slow_operations_are_counted_in_the_window_they_started_in() {
        let ms = Duration::from_millis;
        let mut a = SlowWindows::new(ms(15));
        a.record(ms(50), ms(14)); // below the threshold
        a.record(ms(50), ms(15));
        a.record(ms(99), ms(40));
        a.record(ms(7_000), ms(20));
        let mut b = SlowWindows::new(ms(15));
        b.record(ms(7_099), ms(33));
        a.merge(&b);
        let expected: BTreeMap<u64, (u64, u64)> =
            [(0, (2, 40_000)), (70, (2, 33_000))].into_iter().collect();
        assert_eq!(a.windows, expected);
        let table = a.table();
        assert!(
            table.contains("at     7.0 s       2 slow  longest 33.00 ms"),
            "{table}"
        );
        assert!(SlowWindows::new(ms(15)).table().contains("none"));
    }

    #[test]
    fn slow_windows_stay_bounded() {
        let mut a = SlowWindows::new(Duration::ZERO);
        for w in 0..MAX_SLOW_WINDOWS as u64 + 5 {
            a.record(
                Duration::from_millis(w * SLOW_WINDOW_MS),
                Duration::from_millis(1),
            );
        }
        assert_eq!(a.windows.len(), MAX_SLOW_WINDOWS);
        assert_eq!(a.dropped, 5);
        // A kept window still counts.
        a.record(Duration::ZERO, Duration::from_millis(2));
        assert_eq!(a.windows[&0], (2, 2_000));
        let mut b = SlowWindows::new(Duration::ZERO);
        b.record(Duration::from_secs(999_999), Duration::from_millis(1));
        a.merge(&b);
        assert_eq!(a.dropped, 6);
        assert!(a.table().contains("(6 more past the last kept window)"));
    }

    #[test]
    fn the_schedule_releases_each_operation_on_time_round_robin() {
        let (txs, mut rxs): (Vec<_>, Vec<_>) = (0..4)
            .map(|_| tokio::sync::mpsc::unbounded_channel::<Instant>())
            .unzip();
        let started = Instant::now();
        let far = started + Duration::from_secs(60);
        // 2 000/s: one release every 500 µs; 40 releases take about 20 ms.
        release_schedule(started, far, 2_000, 40, txs);
        let period = Duration::from_micros(500);
        for (w, rx) in rxs.iter_mut().enumerate() {
            let mut k = w as u32;
            while let Ok(at) = rx.try_recv() {
                assert_eq!(at, started + period * k, "worker {w} got release {k}");
                k += 4;
            }
            assert_eq!(k, 40 + w as u32, "worker {w} missed releases");
            assert!(rx.try_recv().is_err());
        }
        assert!(
            started.elapsed() >= period * 39,
            "released ahead of schedule"
        );
        // A deadline ends the schedule early; the senders are dropped either way.
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
        let started = Instant::now();
        release_schedule(
            started,
            started + Duration::from_millis(5),
            1_000,
            1_000,
            vec![tx],
        );
        let mut n = 0;
        while rx.try_recv().is_ok() {
            n += 1;
        }
        assert_eq!(
            n, 5,
            "releases at 0-4 ms, none at or after the 5 ms deadline"
        );
        assert!(rx.blocking_recv().is_none(), "the sender was dropped");
    }
}
