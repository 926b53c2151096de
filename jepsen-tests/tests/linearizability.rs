//! The linearizability checker on hand-written histories: it must accept valid ones
//! (including with timed-out operations) and reject invalid ones with the right culprit.

use laundry_jepsen::history::{operations, parse_jsonl, HistoryError};
use laundry_jepsen::linearizability::{check, KeyVerdict};

const BUDGET: usize = 1_000_000;

/// Builds a history from compact lines: `P TYPE F KEY VALUE TIME`.
fn h(lines: &[&str]) -> String {
    lines
        .iter()
        .map(|l| {
            let p: Vec<&str> = l.split_whitespace().collect();
            format!(
                r#"{{"process":{},"type":"{}","f":"{}","key":"{}","value":{},"time_ns":{}}}"#,
                p[0], p[1], p[2], p[3], p[4], p[5]
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn verdict(lines: &[&str]) -> laundry_jepsen::linearizability::Report {
    check(
        &operations(&parse_jsonl(&h(lines)).unwrap()).unwrap(),
        BUDGET,
    )
}

#[test]
fn sequential_and_overlapping_histories_are_linearizable() {
    let r = verdict(&[
        "1 invoke write k 1 10",
        "1 ok write k 1 20",
        "2 invoke read k null 30",
        "2 ok read k 1 40",
    ]);
    assert_eq!(r.valid, Some(true), "{r:?}");
    // A read overlapping a write may see the old or the new value.
    for seen in ["null", "1"] {
        let r = verdict(&[
            "1 invoke write k 1 10",
            "2 invoke read k null 11",
            &format!("2 ok read k {seen} 12"),
            "1 ok write k 1 20",
        ]);
        assert_eq!(r.valid, Some(true), "read {seen}: {r:?}");
    }
    let cas_chain = [
        "1 invoke write k 0 1",
        "1 ok write k 0 2",
        "2 invoke cas k [0,1] 3",
        "2 ok cas k [0,1] 4",
        "3 invoke read k null 5",
        "3 ok read k 1 6",
    ];
    assert_eq!(verdict(&cas_chain).valid, Some(true));
    // A failed CAS did not happen.
    let failed = [
        "1 invoke write k 0 1",
        "1 ok write k 0 2",
        "2 invoke cas k [5,6] 3",
        "2 fail cas k [5,6] 4",
        "3 invoke read k null 5",
        "3 ok read k 0 6",
    ];
    assert_eq!(verdict(&failed).valid, Some(true));
}

#[test]
fn a_timed_out_write_may_or_may_not_have_happened() {
    let base = [
        "1 invoke write k 1 1",
        "1 ok write k 1 2",
        "2 invoke write k 5 3",
        "2 info write k 5 4",
    ];
    for seen in ["5", "1"] {
        let mut lines = base.to_vec();
        let read_inv = "3 invoke read k null 10".to_string();
        let read_ok = format!("3 ok read k {seen} 11");
        lines.push(&read_inv);
        lines.push(&read_ok);
        assert_eq!(verdict(&lines).valid, Some(true), "seen {seen}");
    }
    // ...but once seen to have happened, it cannot un-happen.
    let flip = [
        "1 invoke write k 1 1",
        "1 ok write k 1 2",
        "2 invoke write k 5 3",
        "2 info write k 5 4",
        "3 invoke read k null 10",
        "3 ok read k 5 11",
        "3 invoke read k null 12",
        "3 ok read k 1 13",
    ];
    assert_eq!(verdict(&flip).valid, Some(false));
    // An operation still in flight when the history ends is indeterminate too.
    let open = [
        "1 invoke write k 1 1",
        "1 ok write k 1 2",
        "2 invoke write k 7 3",
        "3 invoke read k null 10",
        "3 ok read k 7 11",
    ];
    assert_eq!(verdict(&open).valid, Some(true));
}

#[test]
fn stale_read_is_caught_with_a_minimal_counterexample() {
    let r = verdict(&[
        "1 invoke write k 1 10",
        "1 ok write k 1 20",
        "1 invoke write k 2 30",
        "1 ok write k 2 40",
        "2 invoke read k null 50",
        "2 ok read k 1 60", // stale: 2 was written before this read began
        "1 invoke write k 3 70",
        "1 ok write k 3 80",
        "2 invoke read k null 90",
        "2 ok read k 3 100",
    ]);
    assert_eq!(r.valid, Some(false));
    match &r.keys["k"] {
        KeyVerdict::NotLinearizable { prefix, culprit } => {
            assert_eq!(
                culprit.complete_ns,
                Some(60),
                "the stale read is the culprit: {culprit:?}"
            );
            assert!(
                prefix.iter().all(|o| o.invoke_ns <= 60),
                "the prefix stops at the culprit: {prefix:?}"
            );
            assert_eq!(prefix.len(), 3);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn lost_write_double_cas_and_per_key_isolation() {
    let lost = [
        "1 invoke write k 1 1",
        "1 ok write k 1 2",
        "2 invoke read k null 3",
        "2 ok read k null 4",
    ];
    assert_eq!(verdict(&lost).valid, Some(false));
    let double_cas = [
        "1 invoke write k 0 1",
        "1 ok write k 0 2",
        "2 invoke cas k [0,1] 3",
        "2 ok cas k [0,1] 4",
        "3 invoke cas k [0,2] 5",
        "3 ok cas k [0,2] 6",
    ];
    assert_eq!(verdict(&double_cas).valid, Some(false));
    let r = verdict(&[
        "1 invoke write a 1 1",
        "1 ok write a 1 2",
        "2 invoke write b 1 3",
        "2 ok write b 1 4",
        "3 invoke read a null 5",
        "3 ok read a 1 6",
        "4 invoke read b null 7",
        "4 ok read b 9 8",
    ]);
    assert_eq!(r.valid, Some(false));
    assert_eq!(r.keys["a"], KeyVerdict::Linearizable);
    assert!(matches!(r.keys["b"], KeyVerdict::NotLinearizable { .. }));
}

#[test]
fn an_exhausted_budget_is_unknown_never_valid() {
    // Many concurrent writes followed by a read of a value nobody wrote: the search must
    // explore many orders before giving up.
    let mut lines: Vec<String> = (0..12)
        .map(|p| format!("{p} invoke write k {p} 1"))
        .collect();
    lines.extend((0..12).map(|p| format!("{p} ok write k {p} 100")));
    lines.push("99 invoke read k null 200".into());
    lines.push("99 ok read k 1000 201".into());
    let text = h(&lines.iter().map(String::as_str).collect::<Vec<_>>());
    let ops = operations(&parse_jsonl(&text).unwrap()).unwrap();
    let small = check(&ops, 50);
    assert_eq!(small.valid, None, "{small:?}");
    assert!(matches!(small.keys["k"], KeyVerdict::Unknown(_)));
    assert_eq!(check(&ops, 10_000_000).valid, Some(false));
}

#[test]
fn malformed_histories_are_refused_precisely() {
    assert!(matches!(
        parse_jsonl("{not json"),
        Err(HistoryError::Parse { line: 1, .. })
    ));
    let orphan = parse_jsonl(&h(&["1 ok write k 1 2"])).unwrap();
    assert_eq!(
        operations(&orphan),
        Err(HistoryError::Orphan {
            index: 0,
            process: 1
        })
    );
    let overlap = parse_jsonl(&h(&["1 invoke write k 1 1", "1 invoke write k 2 2"])).unwrap();
    assert_eq!(
        operations(&overlap),
        Err(HistoryError::Overlap {
            index: 1,
            process: 1
        })
    );
    let bad_cas = parse_jsonl(&h(&["1 invoke cas k 5 1", "1 ok cas k 5 2"])).unwrap();
    assert!(matches!(
        operations(&bad_cas),
        Err(HistoryError::Value { .. })
    ));
}

/// A sequential history of `n` writes on one key, each followed by a read of what it
/// wrote, except the read after write `stale_after` (if any), which sees the value before.
fn long_history(n: usize, stale_after: Option<usize>) -> Vec<String> {
    let mut lines = Vec::new();
    let mut t = 10;
    for i in 1..=n {
        lines.push(format!("1 invoke write k {i} {t}"));
        lines.push(format!("1 ok write k {i} {}", t + 1));
        let seen = if stale_after == Some(i) { i - 1 } else { i };
        lines.push(format!("2 invoke read k null {}", t + 2));
        lines.push(format!("2 ok read k {seen} {}", t + 3));
        t += 10;
    }
    lines
}

#[test]
fn a_key_past_the_limit_is_checked_up_to_it() {
    use laundry_jepsen::linearizability::MAX_OPS_PER_KEY;
    let n = MAX_OPS_PER_KEY; // 2n operations
    let run = |stale_after| {
        let lines = long_history(n, stale_after);
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        verdict(&refs)
    };
    // Valid throughout: the checked prefix proves nothing about the rest.
    let r = run(None);
    assert_eq!(r.valid, None, "{r:?}");
    assert!(
        matches!(&r.keys["k"], KeyVerdict::Unknown(why) if why.contains("are linearizable")),
        "{r:?}"
    );
    // A stale read inside the prefix is caught, with that read as the culprit.
    let r = run(Some(10));
    assert_eq!(r.valid, Some(false), "{r:?}");
    match &r.keys["k"] {
        KeyVerdict::NotLinearizable { culprit, .. } => {
            assert_eq!(culprit.op, laundry_jepsen::history::RegOp::Read(Some(9)))
        }
        other => panic!("{other:?}"),
    }
    // One past the prefix is not seen: unknown, never valid.
    let r = run(Some(n - 1));
    assert_eq!(r.valid, None, "{r:?}");
}
