//! The datastore through the `etcd-client` crate: concurrent writers, watch ordering across a
//! restart, and durability of acknowledged writes under `kill -9`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{EventType, WatchOptions};
use rand::Rng;

use crate::etcd::{Kind, Server};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// The value a key must hold: any half-written value would differ.
fn value_for(key: &str) -> String {
    format!("{key}:{}", "v".repeat(200))
}

#[test]
fn watch_sees_every_event_once_in_order_across_a_restart() {
    let rt = runtime();
    let mut s = Server::start(Kind::Mk8s);
    rt.block_on(async {
        let mut client = s.client().await;
        let start = client
            .get("x", None)
            .await
            .unwrap()
            .header()
            .unwrap()
            .revision()
            + 1;
        let mut stream = client
            .watch(
                "ordered/",
                Some(WatchOptions::new().with_prefix().with_start_revision(start)),
            )
            .await
            .unwrap();
        let writers: Vec<_> = (0..4)
            .map(|t| {
                let mut c = client.clone();
                tokio::spawn(async move {
                    for n in 0..100 {
                        c.put(format!("ordered/{t}/{n}"), "v", None).await.unwrap();
                    }
                })
            })
            .collect();
        for w in writers {
            w.await.unwrap();
        }
        let mut seen: Vec<i64> = Vec::new();
        while seen.len() < 400 {
            let resp = tokio::time::timeout(Duration::from_secs(10), stream.message())
                .await
                .expect("events in time")
                .unwrap()
                .expect("stream open");
            for ev in resp.events() {
                assert_eq!(ev.event_type(), EventType::Put);
                seen.push(ev.kv().unwrap().mod_revision());
            }
        }
        let expected: Vec<i64> = (start..start + 400).collect();
        assert_eq!(seen, expected, "every revision exactly once, in order");
    });

    // Across a restart, a watch from the next revision continues without gap or repeat.
    let last = rt.block_on(async {
        let mut c = s.client().await;
        c.put("ordered/after", "1", None)
            .await
            .unwrap()
            .header()
            .unwrap()
            .revision()
    });
    s.restart();
    rt.block_on(async {
        let mut client = s.client().await;
        client.put("ordered/restarted", "2", None).await.unwrap();
        let mut stream = client
            .watch(
                "ordered/",
                Some(WatchOptions::new().with_prefix().with_start_revision(last)),
            )
            .await
            .unwrap();
        let mut keys = Vec::new();
        let mut revs = Vec::new();
        while keys.len() < 2 {
            let resp = tokio::time::timeout(Duration::from_secs(10), stream.message())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            for ev in resp.events() {
                keys.push(ev.kv().unwrap().key_str().unwrap().to_string());
                revs.push(ev.kv().unwrap().mod_revision());
            }
        }
        assert_eq!(keys, ["ordered/after", "ordered/restarted"]);
        assert_eq!(
            revs,
            [last, last + 1],
            "revisions continue across the restart"
        );
    });
}

#[test]
fn acknowledged_puts_survive_kill_9() {
    let rt = runtime();
    let mut s = Server::start(Kind::Mk8s);
    let mut rng = rand::rng();
    let mut acked: BTreeMap<String, i64> = BTreeMap::new();
    let mut max_rev = 0;
    for round in 0..20 {
        let done: Arc<Mutex<Vec<(String, i64)>>> = Arc::default();
        let writers: Vec<_> = rt.block_on(async {
            let client = s.client().await;
            (0..8)
                .map(|t| {
                    let mut c = client.clone();
                    let done = done.clone();
                    tokio::spawn(async move {
                        for n in 0.. {
                            let key = format!("crash/{round}/{t}/{n}");
                            match c.put(key.clone(), value_for(&key), None).await {
                                Ok(r) => {
                                    let rev = r.header().map(|h| h.revision()).unwrap_or(0);
                                    done.lock().unwrap().push((key, rev));
                                }
                                Err(_) => break,
                            }
                        }
                    })
                })
                .collect()
        });
        std::thread::sleep(Duration::from_millis(rng.random_range(30..250)));
        s.kill9();
        rt.block_on(async {
            for w in writers {
                let _ = w.await;
            }
        });
        for (k, rev) in done.lock().unwrap().drain(..) {
            max_rev = max_rev.max(rev);
            acked.insert(k, rev);
        }
        s.restart();
        rt.block_on(async {
            let mut c = s.client().await;
            let all = c
                .get("crash/", Some(etcd_client::GetOptions::new().with_prefix()))
                .await
                .unwrap();
            let rev = all.header().unwrap().revision();
            assert!(
                rev >= max_rev,
                "round {round}: revision went back from {max_rev} to {rev}"
            );
            let stored: BTreeMap<String, (String, i64)> = all
                .kvs()
                .iter()
                .map(|kv| {
                    let k = kv.key_str().unwrap().to_string();
                    (k, (kv.value_str().unwrap().to_string(), kv.mod_revision()))
                })
                .collect();
            for (k, rev) in &acked {
                let (v, stored_rev) = stored
                    .get(k)
                    .unwrap_or_else(|| panic!("round {round}: acknowledged {k} is lost"));
                assert_eq!(v, &value_for(k), "round {round}: {k}");
                assert_eq!(stored_rev, rev, "round {round}: {k}");
            }
            for (k, (v, _)) in &stored {
                assert_eq!(v, &value_for(k), "round {round}: {k} is half-visible");
            }
        });
    }
    assert!(
        acked.len() > 100,
        "the test must acknowledge writes: {}",
        acked.len()
    );
}

#[test]
fn deeply_nested_txns_are_checked_in_linear_time() {
    let rt = runtime();
    let s = Server::start(Kind::Mk8s);
    rt.block_on(async {
        let mut c = s.client().await;
        let mut txn =
            etcd_client::Txn::new().and_then([etcd_client::TxnOp::put("deep", "v", None)]);
        for _ in 0..40 {
            txn = etcd_client::Txn::new().and_then([etcd_client::TxnOp::txn(txn)]);
        }
        let started = std::time::Instant::now();
        let r = tokio::time::timeout(Duration::from_secs(10), c.txn(txn))
            .await
            .expect("a 40-deep txn must not hang the server")
            .unwrap();
        assert!(r.succeeded());
        assert!(started.elapsed() < Duration::from_secs(5));
        let got = c.get("deep", None).await.unwrap();
        assert_eq!(got.kvs()[0].value_str().unwrap(), "v");
    });
}
