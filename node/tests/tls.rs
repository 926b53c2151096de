//! TLS on every port and mutual TLS between peers: a cluster forms and serves over TLS;
//! a plain-text client, a client that does not trust the node's CA, and a peer without a
//! certificate from the cluster's CA are all refused.

mod common;

use common::*;
use laundry_client::{pb, Client, ClientConfig, ClientTls};
use laundry_proto::raft::raft_service_client::RaftServiceClient;
use laundry_proto::raft::PeerStatusRequest;
use laundry_testkit::certs::{ca, leaf};
use std::time::Duration;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

async fn peer_status(
    addr: &str,
    ca_pem: &str,
    identity: Option<(&str, &str)>,
) -> Result<bool, String> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name("127.0.0.1");
    if let Some((c, k)) = identity {
        tls = tls.identity(Identity::from_pem(c, k));
    }
    let channel = Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    let mut req = tonic::Request::new(PeerStatusRequest {});
    req.set_timeout(Duration::from_secs(2));
    RaftServiceClient::new(channel)
        .peer_status(req)
        .await
        .map(|r| r.into_inner().initialized)
        .map_err(|s| s.to_string())
}

/// Dials the peer stream over mutual TLS with `files` as this side's material and returns
/// the node's answer to the greeting.
async fn stream_greeting(
    addr: &str,
    files: &laundry_node::tls::TlsFiles,
) -> Result<[u8; 8], String> {
    use laundry_node::raft::wire::MAGIC;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tls = laundry_node::tls::Tls::load(files).map_err(|e| e.to_string())?;
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let name = tokio_rustls::rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut io = tls
        .peer_connector()
        .connect(name, tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let mut answer = [0u8; 8];
    let greet = async {
        io.write_all(&MAGIC).await?;
        io.flush().await?;
        io.read_exact(&mut answer).await
    };
    tokio::time::timeout(Duration::from_secs(5), greet)
        .await
        .map_err(|_| "no answer".to_string())?
        .map_err(|e| format!("greeting: {e}"))?;
    Ok(answer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_everywhere_and_peers_need_a_certificate_from_the_cluster_ca() {
    let _serial = SERIAL.lock().await;
    let mut cluster = TestCluster::unstarted(3, &[]);
    let pki = cluster.dir().join("pki");
    std::fs::create_dir_all(&pki).unwrap();
    let good = ca("laundry test CA");
    let rogue = ca("rogue CA");
    let names = ["127.0.0.1", "localhost"];
    let node = leaf(&good, &pki, "node", &names);
    let rogue_leaf = leaf(&rogue, &pki, "rogue", &names);
    let (cert_pem, key_pem) = (node.cert_pem.clone(), node.key_pem.clone());
    let (rogue_cert, rogue_key) = (rogue_leaf.cert_pem, rogue_leaf.key_pem);
    let good_ca = good.write(&pki.join("ca.crt"));
    let good_files = laundry_node::tls::TlsFiles {
        cert: node.cert.clone(),
        key: node.key.clone(),
        ca: good_ca.clone(),
    };
    let rogue_files = laundry_node::tls::TlsFiles {
        cert: rogue_leaf.cert,
        key: rogue_leaf.key,
        ca: good_ca.clone(),
    };
    cluster.tls = Some(TlsFiles {
        cert: node.cert,
        key: node.key,
        ca: good_ca,
    });
    cluster.client_tls = Some(ClientTls {
        ca_pem: good.pem.clone().into_bytes(),
        identity: None,
    });
    for i in 0..3 {
        cluster.spawn(i);
    }

    // The cluster forms, which needs mutual TLS between peers in both directions.
    cluster.wait_leader(Duration::from_secs(20)).await;
    let client = cluster.client();
    seed(&client).await;
    client.receive(receive("sku", "w1", 4)).await.unwrap();
    assert_eq!(on_hand(&client, "sku", "w1", false).await, 4);
    cluster.wait_converged(Duration::from_secs(20)).await;

    // Admin over TLS.
    let status = cluster.admin().any("GET", "/cluster").await.unwrap();
    assert_eq!(status.status, 200, "{}", status.body);

    // A plain-text client, and a client trusting another CA, get nowhere.
    let ep = vec![cluster.nodes[0].client_addr.clone()];
    let quick = ClientConfig {
        max_attempts: 2,
        total_timeout_ms: 3_000,
        ..ClientConfig::default()
    };
    let plain = Client::new(&ep, quick.clone()).unwrap();
    let get = pb::GetStockRequest {
        item: "sku".into(),
        location: "w1".into(),
        read: None,
    };
    assert!(
        plain.get_stock(get.clone()).await.is_err(),
        "plain text accepted on a TLS port"
    );
    let distrustful = ClientConfig {
        tls: Some(ClientTls {
            ca_pem: rogue.pem.clone().into_bytes(),
            identity: None,
        }),
        ..quick
    };
    assert!(
        Client::new(&ep, distrustful)
            .unwrap()
            .get_stock(get)
            .await
            .is_err(),
        "an untrusted server certificate was accepted"
    );

    // The peer port: a certificate from the cluster CA is let in (control), none or a
    // rogue one is refused in the handshake.
    let peer = cluster.nodes[0].peer_addr.clone();
    assert_eq!(
        peer_status(&peer, &good.pem, Some((&cert_pem, &key_pem))).await,
        Ok(true)
    );
    let no_cert = peer_status(&peer, &good.pem, None).await;
    assert!(
        no_cert.is_err(),
        "peer without a client certificate accepted: {no_cert:?}"
    );
    let rogue_peer = peer_status(&peer, &good.pem, Some((&rogue_cert, &rogue_key))).await;
    assert!(
        rogue_peer.is_err(),
        "peer with a rogue certificate accepted: {rogue_peer:?}"
    );

    // The same port's peer stream (what the nodes replicate over): the cluster's
    // certificate gets the greeting answered, a rogue one is refused.
    assert_eq!(
        stream_greeting(&peer, &good_files).await,
        Ok(laundry_node::raft::wire::MAGIC)
    );
    let rogue_stream = stream_greeting(&peer, &rogue_files).await;
    assert!(
        rogue_stream.is_err(),
        "peer stream with a rogue certificate accepted: {rogue_stream:?}"
    );
}
