//! laundry-api speaking TLS to a store that serves only TLS: with the store's CA it is
//! ready and serves; with another CA it refuses to trust the nodes and stays unready.

mod common;

use common::*;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use serde_json::json;
use std::path::Path;
use std::time::Duration;

/// A CA written to `dir/<name>-ca.crt`, and its issuer.
fn ca(dir: &Path, name: &str) -> (std::path::PathBuf, Issuer<'static, KeyPair>) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let cert = params.self_signed(&key).unwrap();
    let path = dir.join(format!("{name}-ca.crt"));
    std::fs::write(&path, cert.pem()).unwrap();
    (path, Issuer::new(params, key))
}

fn files(dir: &Path, wrong_ca_for_api: bool) -> TlsFiles {
    let (ca_path, issuer) = ca(dir, "store");
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let (cert_path, key_path) = (dir.join("node.crt"), dir.join("node.key"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    let api_ca = if wrong_ca_for_api {
        ca(dir, "rogue").0
    } else {
        ca_path.clone()
    };
    TlsFiles {
        ca: ca_path,
        cert: cert_path,
        key: key_path,
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
