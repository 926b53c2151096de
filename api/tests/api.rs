//! laundry-api against a real 3-node store: every endpoint, bad input of every kind (a
//! precise problem+json and no change on any replica), idempotent retries across a leader
//! kill, and the event stream resuming by Last-Event-ID.

mod common;

use common::*;
use serde_json::{json, Value};
use std::time::Duration;

const JSON: (&str, &str) = ("Content-Type", "application/json");

fn seed(s: &Stack) {
    let r = s.send_json(
        "POST",
        "/v1/items",
        &[],
        &json!({"id": "sku-1", "name": "Socks", "unit": "pair", "attributes": {"colour": "red"}, "low_stock_threshold": 3}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    for (id, kind) in [("wh", "warehouse"), ("shop", "store")] {
        let r = s.send_json(
            "POST",
            "/v1/locations",
            &[],
            &json!({"id": id, "name": id, "kind": kind}),
        );
        assert_eq!(r.status, 201, "{}", r.body);
    }
}

fn on_hand(s: &Stack, item: &str, location: &str) -> i64 {
    let r = s.request(
        "GET",
        &format!("/v1/items/{item}/stock/{location}"),
        &[],
        None,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["on_hand"].as_i64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_does_what_it_says() {
    let _serial = SERIAL.lock().await;
    let s = Stack::start();

    // Ops endpoints.
    assert_eq!(s.request("GET", "/healthz", &[], None).status, 200);
    assert_eq!(
        s.request("GET", "/readyz", &[], None).json()["status"],
        "ready"
    );
    let doc = s.request("GET", "/openapi.json", &[], None).json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/v1/items/{id}",
        "/v1/reservations/{id}/commit",
        "/v1/movements/stream",
    ] {
        assert!(
            doc["paths"][path].is_object(),
            "{path} missing from the document"
        );
    }

    // Items: create (201, Location, ETag), read (ETag), list, conditional update.
    let r = s.send_json(
        "POST",
        "/v1/items",
        &[("Idempotency-Key", "create-sku-1")],
        &json!({"id": "sku-1", "name": "Socks", "unit": "pair", "attributes": {"colour": "red"}, "low_stock_threshold": 3}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.header("location"), Some("/v1/items/sku-1"));
    assert_eq!(r.header("idempotency-key"), Some("create-sku-1"));
    let created_rev = r.json()["revision"].as_u64().unwrap();
    assert_eq!(
        r.header("etag"),
        Some(format!("\"{created_rev}\"").as_str())
    );
    let item = s.request("GET", "/v1/items/sku-1", &[], None);
    assert_eq!(item.json()["attributes"]["colour"], "red");
    let etag = item.header("etag").unwrap().to_string();
    assert!(item.header("x-laundry-applied-index").is_some());
    let stale = s.request("GET", "/v1/items/sku-1?consistency=stale", &[], None);
    assert_eq!(stale.status, 200);
    let r = s.send_json(
        "PATCH",
        "/v1/items/sku-1",
        &[("If-Match", &etag)],
        &json!({"name": "Socks, red"}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let new_etag = r.header("etag").unwrap().to_string();
    assert_ne!(new_etag, etag);
    // The old ETag no longer matches: 412, name unchanged.
    s.send_json(
        "PATCH",
        "/v1/items/sku-1",
        &[("If-Match", &etag)],
        &json!({"name": "lost update"}),
    )
    .problem(412, "precondition-failed");
    assert_eq!(
        s.request("GET", "/v1/items/sku-1", &[], None).json()["name"],
        "Socks, red"
    );
    for i in 2..=5 {
        let r = s.send_json(
            "POST",
            "/v1/items",
            &[],
            &json!({"id": format!("sku-{i}"), "name": "x"}),
        );
        assert_eq!(r.status, 201);
    }
    // Cursor pagination visits every item once.
    let (mut seen, mut cursor) = (Vec::new(), None::<String>);
    loop {
        let path = match &cursor {
            None => "/v1/items?limit=2".to_string(),
            Some(c) => format!("/v1/items?limit=2&cursor={c}"),
        };
        let page = s.request("GET", &path, &[], None).json();
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 2);
        seen.extend(items.iter().map(|i| i["id"].as_str().unwrap().to_string()));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(seen, ["sku-1", "sku-2", "sku-3", "sku-4", "sku-5"]);

    // Locations.
    for (id, kind) in [("wh", "warehouse"), ("shop", "store")] {
        let r = s.send_json(
            "POST",
            "/v1/locations",
            &[],
            &json!({"id": id, "name": id, "kind": kind}),
        );
        assert_eq!(r.status, 201, "{}", r.body);
    }
    let locs = s
        .request("GET", "/v1/locations?limit=100", &[], None)
        .json();
    let kinds: Vec<(String, String)> = locs["locations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["id"].as_str().unwrap().into(),
                l["kind"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert!(kinds.contains(&("wh".into(), "warehouse".into())));
    assert!(kinds.contains(&("supplier".into(), "virtual".into())));

    // Movements: receipt, shipment, adjustment, transfer; stock follows.
    let ok = |r: Resp| {
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()
    };
    ok(s.send_json(
        "POST",
        "/v1/receipts",
        &[],
        &json!({"item": "sku-1", "location": "wh", "quantity": 10, "reference": "PO-1"}),
    ));
    ok(s.send_json(
        "POST",
        "/v1/shipments",
        &[],
        &json!({"item": "sku-1", "location": "wh", "quantity": 2}),
    ));
    ok(s.send_json(
        "POST",
        "/v1/adjustments",
        &[],
        &json!({"item": "sku-1", "location": "wh", "delta": -1, "reason": "damaged"}),
    ));
    let t = ok(s.send_json(
        "POST",
        "/v1/transfers",
        &[],
        &json!({"item": "sku-1", "from": "wh", "to": "shop", "quantity": 3}),
    ));
    assert_eq!(t["movements"][0]["kind"], "transfer");
    assert_eq!(
        (on_hand(&s, "sku-1", "wh"), on_hand(&s, "sku-1", "shop")),
        (4, 3)
    );
    let levels = s.request("GET", "/v1/items/sku-1/stock", &[], None).json();
    let total: i64 = levels["levels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["on_hand"].as_i64().unwrap())
        .sum();
    assert_eq!(
        total, 0,
        "conservation across all locations, virtual included"
    );
    // If-Match on a stock write: the level's ETag.
    let level = s.request("GET", "/v1/items/sku-1/stock/wh", &[], None);
    let level_tag = level.header("etag").unwrap().to_string();
    ok(s.send_json(
        "POST",
        "/v1/shipments",
        &[("If-Match", &level_tag)],
        &json!({"item": "sku-1", "location": "wh", "quantity": 1}),
    ));
    s.send_json(
        "POST",
        "/v1/shipments",
        &[("If-Match", &level_tag)],
        &json!({"item": "sku-1", "location": "wh", "quantity": 1}),
    )
    .problem(412, "precondition-failed");
    // Body conditions.
    s.send_json("POST", "/v1/receipts", &[], &json!({"item": "sku-1", "location": "wh", "quantity": 1, "conditions": [{"item": "sku-1", "location": "wh", "on_hand": 99}]}))
        .problem(412, "precondition-failed");
    assert_eq!(on_hand(&s, "sku-1", "wh"), 3);

    // Reservations: reserve, read, commit; reserve, release.
    let r = s.send_json(
        "POST",
        "/v1/reservations",
        &[],
        &json!({"id": "res-a", "item": "sku-1", "location": "wh", "quantity": 2, "ttl_ms": 60000}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.header("location"), Some("/v1/reservations/res-a"));
    let res = s.request("GET", "/v1/reservations/res-a", &[], None).json();
    assert_eq!(
        (res["state"].as_str(), res["quantity"].as_i64()),
        (Some("open"), Some(2))
    );
    let lvl = s
        .request("GET", "/v1/items/sku-1/stock/wh", &[], None)
        .json();
    assert_eq!(
        (lvl["reserved"].as_i64(), lvl["available"].as_i64()),
        (Some(2), Some(1))
    );
    s.send_json(
        "POST",
        "/v1/reservations",
        &[],
        &json!({"item": "sku-1", "location": "wh", "quantity": 2, "ttl_ms": 60000}),
    )
    .problem(409, "insufficient-stock");
    ok(s.request("POST", "/v1/reservations/res-a/commit", &[], None));
    assert_eq!(
        s.request("GET", "/v1/reservations/res-a", &[], None).json()["state"],
        "committed"
    );
    s.request("POST", "/v1/reservations/res-a/release", &[], None)
        .problem(409, "reservation-ended");
    let r = s.send_json(
        "POST",
        "/v1/reservations",
        &[],
        &json!({"item": "sku-1", "location": "wh", "quantity": 1, "ttl_ms": 60000}),
    );
    let generated = r.json()["reservation_ids"][0].as_str().unwrap().to_string();
    ok(s.send_json(
        "POST",
        &format!("/v1/reservations/{generated}/release"),
        &[],
        &json!({"reason": "cart abandoned"}),
    ));
    assert_eq!(
        s.request("GET", &format!("/v1/reservations/{generated}"), &[], None)
            .json()["state"],
        "released"
    );
    assert_eq!(on_hand(&s, "sku-1", "wh"), 1);

    // Batch: all or none.
    let b = ok(s.send_json(
        "POST",
        "/v1/batches",
        &[],
        &json!({"operations": [
            {"receive": {"item": "sku-2", "location": "wh", "quantity": 5}},
            {"transfer": {"item": "sku-2", "from": "wh", "to": "shop", "quantity": 5}},
        ]}),
    ));
    assert_eq!(b["movements"].as_array().unwrap().len(), 2);
    s.send_json(
        "POST",
        "/v1/batches",
        &[],
        &json!({"operations": [
            {"receive": {"item": "sku-3", "location": "wh", "quantity": 5}},
            {"ship": {"item": "sku-3", "location": "wh", "quantity": 6}},
        ]}),
    )
    .problem(409, "insufficient-stock");
    assert_eq!(
        on_hand(&s, "sku-3", "wh"),
        0,
        "the failed batch applied nothing"
    );

    // History: every movement once, in order, across pages; filters apply.
    let (mut all, mut cursor) = (Vec::<Value>::new(), None::<String>);
    for _ in 0..100 {
        let path = match &cursor {
            None => "/v1/movements?limit=3".to_string(),
            Some(c) => format!("/v1/movements?limit=3&cursor={c}"),
        };
        let page = s.request("GET", &path, &[], None).json();
        all.extend(page["movements"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    let keys: Vec<(u64, u64)> = all
        .iter()
        .map(|m| (m["revision"].as_u64().unwrap(), m["seq"].as_u64().unwrap()))
        .collect();
    assert!(
        keys.windows(2).all(|w| w[0] < w[1]),
        "ordered, no repeats: {keys:?}"
    );
    assert_eq!(
        all.iter().filter(|m| m["item"] == "sku-2").count(),
        2,
        "the batch's two movements"
    );
    let sku2 = s
        .request("GET", "/v1/movements?item=sku-2", &[], None)
        .json();
    assert_eq!(sku2["movements"].as_array().unwrap().len(), 2);

    // Metrics count what happened, by route template.
    let m = s.request("GET", "/metrics", &[], None);
    assert!(m.body.contains("laundry_api_requests_total{"), "{}", m.body);
    assert!(m.body.contains("route=\"/v1/items/{id}\""));
    assert!(m.body.trim_end().ends_with("# EOF"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_problem_json_and_changes_nothing() {
    let _serial = SERIAL.lock().await;
    let s = Stack::start();
    seed(&s);
    let r = s.send_json(
        "POST",
        "/v1/receipts",
        &[],
        &json!({"item": "sku-1", "location": "wh", "quantity": 5}),
    );
    assert_eq!(r.status, 200);
    let before = s.converged_digest().await;

    let post = |path: &str, headers: &[(&str, &str)], body: &str| {
        let mut h = vec![JSON];
        h.extend_from_slice(headers);
        s.request("POST", path, &h, Some(body))
    };
    // Body shape.
    post("/v1/receipts", &[], "{not json").problem(400, "invalid-body");
    post("/v1/receipts", &[], r#"{"item":"sku-1","location":"wh"}"#).problem(400, "invalid-body");
    post(
        "/v1/receipts",
        &[],
        r#"{"item":"sku-1","location":"wh","quantity":1,"colour":"red"}"#,
    )
    .problem(400, "invalid-body");
    post(
        "/v1/receipts",
        &[],
        r#"{"item":"sku-1","location":"wh","quantity":9223372036854775808}"#,
    )
    .problem(400, "invalid-body");
    post(
        "/v1/receipts",
        &[],
        r#"{"item":"sku-1","location":"wh","quantity":1,"conditions":[{"item":"sku-1"}]}"#,
    )
    .problem(400, "invalid-body");
    post("/v1/batches", &[], r#"{"operations":[{"teleport":{}}]}"#).problem(400, "invalid-body");
    post(
        "/v1/locations",
        &[],
        r#"{"id":"x","name":"x","kind":"moon"}"#,
    )
    .problem(400, "invalid-body");
    s.request(
        "POST",
        "/v1/receipts",
        &[("Content-Type", "text/plain")],
        Some("hello"),
    )
    .problem(415, "unsupported-media-type");
    s.request("POST", "/v1/receipts", &[], Some(r#"{"item":"sku-1"}"#))
        .problem(415, "unsupported-media-type");
    let huge = format!(r#"{{"id":"big","name":"{}"}}"#, "x".repeat(300 * 1024));
    post("/v1/items", &[], &huge).problem(413, "payload-too-large");
    // Domain validation by the store.
    post(
        "/v1/receipts",
        &[],
        r#"{"item":"sku-1","location":"wh","quantity":0}"#,
    )
    .problem(400, "invalid-request");
    post(
        "/v1/receipts",
        &[],
        r#"{"item":"sku-1","location":"wh","quantity":-3}"#,
    )
    .problem(400, "invalid-request");
    post("/v1/items", &[], r#"{"id":"bad id!","name":"x"}"#).problem(400, "invalid-request");
    post(
        "/v1/items",
        &[],
        &format!(r#"{{"id":"{}","name":"x"}}"#, "a".repeat(129)),
    )
    .problem(400, "invalid-request");
    let many: Vec<Value> = (0..129)
        .map(|_| json!({"receive": {"item": "sku-1", "location": "wh", "quantity": 1}}))
        .collect();
    post("/v1/batches", &[], &json!({"operations": many}).to_string())
        .problem(400, "limit-exceeded");
    post(
        "/v1/receipts",
        &[],
        r#"{"item":"nope","location":"wh","quantity":1}"#,
    )
    .problem(404, "item-not-found");
    post(
        "/v1/receipts",
        &[],
        r#"{"item":"sku-1","location":"nowhere","quantity":1}"#,
    )
    .problem(404, "location-not-found");
    post("/v1/items", &[], r#"{"id":"sku-1","name":"again"}"#).problem(409, "item-exists");
    post(
        "/v1/shipments",
        &[],
        r#"{"item":"sku-1","location":"wh","quantity":6}"#,
    )
    .problem(409, "insufficient-stock");
    post(
        "/v1/shipments",
        &[],
        r#"{"item":"sku-1","location":"wh","quantity":1,"to":"shop"}"#,
    )
    .problem(409, "wrong-location-kind");
    s.request("POST", "/v1/reservations/none/commit", &[], None)
        .problem(404, "reservation-not-found");
    // Headers.
    post(
        "/v1/receipts",
        &[("Idempotency-Key", "has space")],
        r#"{"item":"sku-1","location":"wh","quantity":1}"#,
    )
    .problem(400, "invalid-header");
    post(
        "/v1/receipts",
        &[("If-Match", "7")],
        r#"{"item":"sku-1","location":"wh","quantity":1}"#,
    )
    .problem(400, "invalid-header");
    post(
        "/v1/receipts",
        &[("If-Match", "\"1\", \"2\"")],
        r#"{"item":"sku-1","location":"wh","quantity":1}"#,
    )
    .problem(400, "invalid-header");
    post(
        "/v1/receipts",
        &[("If-Match", "W/\"1\"")],
        r#"{"item":"sku-1","location":"wh","quantity":1}"#,
    )
    .problem(412, "precondition-failed");
    // A reused idempotency key for a different request.
    let first = post(
        "/v1/receipts",
        &[("Idempotency-Key", "once")],
        r#"{"item":"sku-1","location":"wh","quantity":1}"#,
    );
    assert_eq!(first.status, 200);
    let after_keyed = s.converged_digest().await;
    post(
        "/v1/receipts",
        &[("Idempotency-Key", "once")],
        r#"{"item":"sku-1","location":"wh","quantity":2}"#,
    )
    .problem(422, "idempotency-key-reused");
    // Parameters and routes.
    s.request("GET", "/v1/items?limit=0", &[], None)
        .problem(400, "invalid-parameter");
    s.request("GET", "/v1/items?limit=abc", &[], None)
        .problem(400, "invalid-parameter");
    s.request("GET", "/v1/items?colour=red", &[], None)
        .problem(400, "invalid-parameter");
    s.request("GET", "/v1/items?consistency=psychic", &[], None)
        .problem(400, "invalid-parameter");
    s.request("GET", "/v1/movements?cursor=garbage", &[], None)
        .problem(400, "invalid-request");
    s.request(
        "GET",
        "/v1/movements/stream",
        &[("Last-Event-ID", "yesterday")],
        None,
    )
    .problem(400, "invalid-header");
    s.request("GET", "/v1/nothing", &[], None)
        .problem(404, "not-found");
    s.request("DELETE", "/v1/items/sku-1", &[], None)
        .problem(405, "method-not-allowed");
    s.request("GET", "/v1/items/nope", &[], None)
        .problem(404, "item-not-found");

    let after = s.converged_digest().await;
    assert_ne!(
        before, after_keyed,
        "the keyed receipt changed the state (control)"
    );
    assert_eq!(after_keyed, after, "no refused request changed any replica");
    assert_eq!(on_hand(&s, "sku-1", "wh"), 6);
    let log = s.api_log();
    assert!(!log.contains("panicked"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_retries_apply_once_across_a_leader_kill() {
    let _serial = SERIAL.lock().await;
    let mut s = Stack::start();
    seed(&s);
    let body = json!({"item": "sku-1", "location": "wh", "quantity": 7});
    let r = s.send_json(
        "POST",
        "/v1/receipts",
        &[("Idempotency-Key", "po-1")],
        &body,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("idempotent-replayed"), None);
    let first = r.json();

    let leader = s.leader().await;
    s.kill(leader);
    // The API retries across the election by itself: a new key applies once...
    let r = s.send_json(
        "POST",
        "/v1/receipts",
        &[("Idempotency-Key", "po-2")],
        &json!({"item": "sku-1", "location": "wh", "quantity": 5}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let second = r.json();
    // ...and the caller's retries of both, answered by the new leader, are replays.
    let again = s.send_json(
        "POST",
        "/v1/receipts",
        &[("Idempotency-Key", "po-1")],
        &body,
    );
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.json()["revision"], first["revision"]);
    let again = s.send_json(
        "POST",
        "/v1/receipts",
        &[("Idempotency-Key", "po-2")],
        &json!({"item": "sku-1", "location": "wh", "quantity": 5}),
    );
    assert_eq!(again.json()["revision"], second["revision"]);
    assert_eq!(again.json()["replayed"], true);
    assert_eq!(
        on_hand(&s, "sku-1", "wh"),
        12,
        "each receipt applied exactly once"
    );
    let receipts = s
        .request("GET", "/v1/movements?item=sku-1", &[], None)
        .json();
    assert_eq!(receipts["movements"].as_array().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_stream_resumes_by_last_event_id_without_gaps_or_repeats() {
    let _serial = SERIAL.lock().await;
    let s = Stack::start();
    seed(&s);
    let receive = |q: i64| {
        let r = s.send_json(
            "POST",
            "/v1/receipts",
            &[],
            &json!({"item": "sku-1", "location": "wh", "quantity": q}),
        );
        assert_eq!(r.status, 200, "{}", r.body);
    };
    for q in 1..=3 {
        receive(q);
    }
    let mut stream = s.open_stream("/v1/movements/stream?item=sku-1", None);
    let mut got = Vec::new();
    for _ in 0..3 {
        let ev = stream.next(Duration::from_secs(10)).expect("history event");
        assert_eq!(ev.event, "movement");
        got.push(ev);
    }
    assert_eq!(stream.status, 200);
    // Live: a new movement arrives on the open stream.
    receive(4);
    got.push(stream.next(Duration::from_secs(10)).expect("live event"));
    drop(stream);
    // While disconnected, more movements; then resume after the last id seen.
    receive(5);
    receive(6);
    let last = got.last().unwrap().id.clone();
    let mut resumed = s.open_stream("/v1/movements/stream?item=sku-1", Some(&last));
    for _ in 0..2 {
        got.push(
            resumed
                .next(Duration::from_secs(10))
                .expect("resumed event"),
        );
    }
    assert!(
        resumed.next(Duration::from_millis(1500)).is_none(),
        "nothing beyond the six movements"
    );
    let quantities: Vec<i64> = got
        .iter()
        .map(|e| {
            serde_json::from_str::<Value>(&e.data).unwrap()["quantity"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert_eq!(
        quantities,
        [1, 2, 3, 4, 5, 6],
        "every movement once, in order"
    );
    // The ids are the ledger positions.
    let history = s
        .request("GET", "/v1/movements?item=sku-1", &[], None)
        .json();
    let ids: Vec<String> = history["movements"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| format!("{}-{}", m["revision"], m["seq"]))
        .collect();
    assert_eq!(ids, got.iter().map(|e| e.id.clone()).collect::<Vec<_>>());
    // Open streams are counted and released.
    // (The server notices a closed connection at its next write, a keep-alive at most.)
    drop(resumed);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let m = s.request("GET", "/metrics", &[], None).body;
        if m.contains("laundry_api_event_streams 0") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "streams never released: {m}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
