//! The run's picture: latency of every completed operation over time (log scale; ok, fail
//! and info in different colours) above throughput (acknowledged operations per second),
//! with each fault's interval shaded and named. Plain SVG, written by hand: no plotting
//! dependency, opens in any browser.

use crate::campaign::FaultInterval;
use crate::history::{Event, EventType};
use std::collections::BTreeMap;
use std::fmt::Write;

const WIDTH: f64 = 1000.0;
const LEFT: f64 = 60.0;
const RIGHT: f64 = 20.0;
const LAT_TOP: f64 = 30.0;
const LAT_HEIGHT: f64 = 260.0;
const TP_TOP: f64 = 330.0;
const TP_HEIGHT: f64 = 140.0;
const HEIGHT: f64 = 510.0;
/// Latency axis: 0.1 ms to 10 s.
const LAT_MIN_LOG: f64 = -1.0;
const LAT_MAX_LOG: f64 = 4.0;
/// Most points drawn, so a long run still makes a small file (evenly thinned).
const MAX_POINTS: usize = 20_000;

/// One completed operation: (invoke time, latency, how it ended).
fn completions(events: &[Event]) -> Vec<(u64, u64, EventType)> {
    let mut open: BTreeMap<u64, u64> = BTreeMap::new();
    let mut out = Vec::new();
    for e in events {
        match e.kind {
            EventType::Invoke => {
                open.insert(e.process, e.time_ns);
            }
            kind => {
                if let Some(start) = open.remove(&e.process) {
                    out.push((start, e.time_ns.saturating_sub(start), kind));
                }
            }
        }
    }
    out
}

pub fn svg(title: &str, events: &[Event], faults: &[FaultInterval]) -> String {
    let ops = completions(events);
    let end_ns = events.iter().map(|e| e.time_ns).max().unwrap_or(1).max(1);
    let x = |t_ns: u64| LEFT + (t_ns as f64 / end_ns as f64) * (WIDTH - LEFT - RIGHT);
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="11">
<rect width="100%" height="100%" fill="white"/>
<text x="{LEFT}" y="18" font-size="14">{}</text>
"#,
        escape(title)
    );
    for f in faults {
        let (x0, x1) = (x(f.start_ns), x(f.end_ns));
        let _ = writeln!(
            s,
            r##"<rect x="{x0:.1}" y="{LAT_TOP}" width="{:.1}" height="{:.1}" fill="#f4b183" fill-opacity="0.35"><title>{}</title></rect><text x="{x0:.1}" y="{:.1}" fill="#a0522d">{}</text>"##,
            (x1 - x0).max(1.0),
            TP_TOP + TP_HEIGHT - LAT_TOP,
            escape(&f.detail),
            LAT_TOP + 10.0,
            f.faults
                .iter()
                .map(|x| format!("{x:?}"))
                .collect::<Vec<_>>()
                .join("+")
        );
    }
    // Latency panel.
    let _ = writeln!(
        s,
        r##"<rect x="{LEFT}" y="{LAT_TOP}" width="{:.1}" height="{LAT_HEIGHT}" fill="none" stroke="#888"/>"##,
        WIDTH - LEFT - RIGHT
    );
    for decade in (LAT_MIN_LOG as i32)..=(LAT_MAX_LOG as i32) {
        let y = lat_y(10f64.powi(decade));
        let label = if decade < 0 {
            "0.1 ms".to_string()
        } else if decade < 3 {
            format!("{} ms", 10u64.pow(decade as u32))
        } else {
            format!("{} s", 10u64.pow(decade as u32 - 3))
        };
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" x2="{:.1}" y1="{y:.1}" y2="{y:.1}" stroke="#eee"/><text x="4" y="{:.1}">{label}</text>"##,
            WIDTH - RIGHT,
            y + 4.0
        );
    }
    let step = ops.len().div_ceil(MAX_POINTS).max(1);
    for (start, latency, kind) in ops.iter().step_by(step) {
        let colour = match kind {
            EventType::Ok => "#1f77b4",
            EventType::Fail => "#2ca02c",
            _ => "#d62728",
        };
        let _ = writeln!(
            s,
            r#"<circle cx="{:.1}" cy="{:.1}" r="1.3" fill="{colour}"/>"#,
            x(*start),
            lat_y(*latency as f64 / 1e6)
        );
    }
    // Throughput panel: acknowledged operations per second.
    let seconds = (end_ns / 1_000_000_000 + 1) as usize;
    let mut per_s = vec![0u64; seconds];
    for (start, latency, kind) in &ops {
        if *kind == EventType::Ok {
            per_s[((start + latency) / 1_000_000_000) as usize % seconds] += 1;
        }
    }
    let peak = per_s.iter().copied().max().unwrap_or(1).max(1);
    let _ = writeln!(
        s,
        r##"<rect x="{LEFT}" y="{TP_TOP}" width="{:.1}" height="{TP_HEIGHT}" fill="none" stroke="#888"/><text x="4" y="{:.1}">{peak}/s</text><text x="4" y="{:.1}">0</text>"##,
        WIDTH - LEFT - RIGHT,
        TP_TOP + 10.0,
        TP_TOP + TP_HEIGHT
    );
    let points: Vec<String> = per_s
        .iter()
        .enumerate()
        .map(|(i, n)| {
            format!(
                "{:.1},{:.1}",
                x(i as u64 * 1_000_000_000 + 500_000_000),
                TP_TOP + TP_HEIGHT - (*n as f64 / peak as f64) * TP_HEIGHT
            )
        })
        .collect();
    let _ = writeln!(
        s,
        r##"<polyline points="{}" fill="none" stroke="#1f77b4" stroke-width="1.5"/>"##,
        points.join(" ")
    );
    let _ = write!(
        s,
        r##"<text x="{LEFT}" y="{:.1}">time: 0 – {:.1} s · latency (blue ok, green fail, red info) · ok operations per second · shaded: faults</text>
</svg>
"##,
        HEIGHT - 12.0,
        end_ns as f64 / 1e9
    );
    s
}

fn lat_y(ms: f64) -> f64 {
    let l = ms.max(1e-3).log10().clamp(LAT_MIN_LOG, LAT_MAX_LOG);
    LAT_TOP + LAT_HEIGHT - (l - LAT_MIN_LOG) / (LAT_MAX_LOG - LAT_MIN_LOG) * LAT_HEIGHT
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::F;
    use crate::nemesis::Fault;

    fn ev(process: u64, kind: EventType, t_ms: u64) -> Event {
        Event {
            process,
            kind,
            f: F::Read,
            key: "k".into(),
            value: serde_json::Value::Null,
            time_ns: t_ms * 1_000_000,
        }
    }

    #[test]
    fn operations_pair_per_process_and_the_svg_shows_them_and_the_faults() {
        let events = vec![
            ev(1, EventType::Invoke, 0),
            ev(2, EventType::Invoke, 5),
            ev(1, EventType::Ok, 10),
            ev(2, EventType::Info, 2_000),
        ];
        let ops = completions(&events);
        assert_eq!(
            ops,
            [
                (0, 10_000_000, EventType::Ok),
                (5_000_000, 1_995_000_000, EventType::Info)
            ]
        );
        let faults = [FaultInterval {
            faults: vec![Fault::Halves],
            detail: "1 hears 1+2 <&>".into(),
            start_ns: 100_000_000,
            end_ns: 900_000_000,
        }];
        let out = svg("test <run>", &events, &faults);
        assert!(out.starts_with("<svg") && out.trim_end().ends_with("</svg>"));
        assert_eq!(out.matches("<circle").count(), 2);
        assert!(out.contains("Halves") && out.contains("1 hears 1+2 &lt;&amp;&gt;"));
        assert!(out.contains("test &lt;run&gt;"));
    }
}
