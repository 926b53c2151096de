//! A backup taken under write load restores into a fresh 3-node cluster holding exactly the
//! backed-up state (ledger and balances); a corrupt or truncated archive is refused and
//! nothing is written.

mod common;

use common::*;
use laundry_client::{pb, Client};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

async fn whole_ledger(client: &Client, stale: bool) -> Vec<pb::Movement> {
    let mut out = Vec::new();
    let mut token = String::new();
    loop {
        let read = stale.then_some(pb::ReadOptions {
            consistency: pb::Consistency::Stale as i32,
        });
        let page = client
            .list_movements(pb::ListMovementsRequest {
                page_size: 1000,
                page_token: token,
                read,
                ..Default::default()
            })
            .await
            .unwrap();
        out.extend(page.movements);
        if page.next_page_token.is_empty() {
            return out;
        }
        token = page.next_page_token;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_under_load_restores_exactly_into_a_new_cluster() {
    let _serial = SERIAL.lock().await;
    let backups = tempfile::tempdir().unwrap();
    let dir_arg = backups.path().to_str().unwrap().to_string();
    let a = TestCluster::start(3, &["--backup-dir", &dir_arg, "--cluster-name", "origin"]);
    a.wait_leader(Duration::from_secs(15)).await;
    let client = a.client();
    client.create_item(item("sku")).await.unwrap();
    for w in ["w1", "w2"] {
        client.create_location(warehouse(w)).await.unwrap();
    }
    client.receive(receive("sku", "w1", 1000)).await.unwrap();

    // Writers keep moving stock while the backup is taken.
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (client, stop) = (client.clone(), stop.clone());
        tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                let (from, to) = if n.is_multiple_of(2) {
                    ("w1", "w2")
                } else {
                    ("w2", "w1")
                };
                let _ = client
                    .transfer(pb::TransferRequest {
                        item: "sku".into(),
                        from: from.into(),
                        to: to.into(),
                        quantity: 1 + (n % 3) as i64,
                        ..Default::default()
                    })
                    .await;
                let _ = client.receive(receive("sku", "w1", 1)).await;
                n += 1;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(700)).await;
    let taken = a.admin().leader("POST", "/backup", None).await.unwrap();
    assert_eq!(taken.status, 200, "{}", taken.body);
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();

    let v = taken.json().unwrap();
    let archive = std::path::PathBuf::from(v["path"].as_str().unwrap());
    let last_index = v["manifest"]["last_index"].as_u64().unwrap();
    let digest = v["manifest"]["state_digest"].as_u64().unwrap();
    let listed = a
        .admin()
        .any("GET", "/backups")
        .await
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(
        listed["backups"][0]["path"].as_str(),
        Some(archive.to_str().unwrap())
    );

    // The origin's ledger up to the backup point, for comparison; it kept growing after.
    let origin: Vec<pb::Movement> = whole_ledger(&client, false)
        .await
        .into_iter()
        .filter(|m| laundry_node::raft::log_index_of(m.revision) <= last_index)
        .collect();
    assert!(
        whole_ledger(&client, false).await.len() > origin.len(),
        "writes continued after the backup"
    );
    drop(a);

    let mut b = TestCluster::unstarted(3, &[]);

    // Damaged archives: refused, nothing written.
    let bytes = std::fs::read(&archive).unwrap();
    let truncated = backups.path().join("truncated.llbackup");
    std::fs::write(&truncated, &bytes[..bytes.len() - 10]).unwrap();
    let flipped = backups.path().join("flipped.llbackup");
    let mut bad = bytes.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x40;
    std::fs::write(&flipped, &bad).unwrap();
    for damaged in [&truncated, &flipped] {
        let (ok, out) = b.restore(0, damaged);
        assert!(!ok, "restore of {} succeeded: {out}", damaged.display());
        assert!(out.contains("nothing was written"), "{out}");
        assert!(
            !b.nodes[0].data_dir.exists(),
            "a refused restore left files behind"
        );
    }

    for i in 0..3 {
        let (ok, out) = b.restore(i, &archive);
        assert!(ok, "restore failed: {out}");
    }
    let (ok, out) = b.restore(0, &archive);
    assert!(
        !ok && out.contains("not empty"),
        "restore over existing data must be refused: {out}"
    );
    for i in 0..3 {
        b.spawn(i);
    }
    b.wait_leader(Duration::from_secs(15)).await;
    let statuses = b.wait_converged(Duration::from_secs(20)).await;
    assert!(
        statuses.iter().all(|s| s.state_digest == digest),
        "restored state differs from the backup: {statuses:?}"
    );
    assert!(statuses.iter().all(|s| s.voters == vec![1, 2, 3]));
    let restored = b.client();
    assert_eq!(
        whole_ledger(&restored, false).await,
        origin,
        "the ledger up to the backup point, exactly"
    );
    // The new cluster carries on from the backup's revision.
    let w = restored.receive(receive("sku", "w2", 1)).await.unwrap();
    assert!(
        laundry_node::raft::log_index_of(w.revision) > last_index,
        "revision {} not after {last_index}",
        w.revision
    );
    b.wait_converged(Duration::from_secs(20)).await;
}
