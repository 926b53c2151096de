//! laundry-api speaking TLS to a store that serves only TLS: with the store's CA it is
//! ready and serves; with another CA it refuses to trust the nodes and stays unready.

mod common;

use common::*;
use laundry_testkit::certs::{ca, leaf};
use serde_json::json;
use std::path::Path;
use std::time::Duration;

fn files(dir: &Path, wrong_ca_for_api: bool) -> TlsFiles {
    let store = ca("store");
    let node = leaf(&store, dir, "node", &["127.0.0.1"]);
    let ca_path = store.write(&dir.join("store-ca.crt"));
    let api_ca = if wrong_ca_for_api {
        ca("rogue").write(&dir.join("rogue-ca.crt"))
    } else {
        ca_path.clone()
    };
    TlsFiles {
        ca: ca_path,
        cert: node.cert,
        key: node.key,
        api_ca,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_serves_over_a_tls_store_and_refuses_a_store_it_cannot_verify() {
    let _serial = SERIAL.lock().await;
    let certs = tempfile::tempdir().unwrap();
    let s = Stack::start_with(Some(&files(certs.path(), false)));
    s.wait_ready();
    let r = s.send_json(
        "POST",
        "/v1/items",
        &[],
        &json!({"id": "tls-1", "name": "over TLS"}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let r = s.request("GET", "/v1/items/tls-1", &[], None);
    assert_eq!(r.json()["name"], "over TLS");
    drop(s);

    // Control: the same store, but the API trusts another CA: never ready, and requests
    // are refused as unavailable rather than sent to an unverified node.
    let rogue = tempfile::tempdir().unwrap();
    let s = Stack::start_with(Some(&files(rogue.path(), true)));
    std::thread::sleep(Duration::from_secs(3));
    s.request("GET", "/readyz", &[], None)
        .problem(503, "unavailable");
    let r = s.send_json(
        "POST",
        "/v1/items",
        &[],
        &json!({"id": "tls-2", "name": "x"}),
    );
    assert!(r.status >= 500, "{} {}", r.status, r.body);
}
