//! Differential test: the same sequence of etcd API calls through the `etcd-client` crate
//! against the mk8s datastore and against real etcd 3.4 must give the same transcript
//! (revisions relative to the start, errors as gRPC code and message).

use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, DeleteOptions, Error, GetOptions, LeaseGrantOptions,
    LeaseTimeToLiveOptions, PutOptions, SortOrder, SortTarget, Txn, TxnOp, TxnOpResponse,
    WatchOptions,
};

use crate::etcd::{Kind, Server};

fn err(e: Error) -> String {
    match e {
        Error::GRpcStatus(s) => format!("ERR {:?} {}", s.code(), s.message()),
        other => format!("ERR {other}"),
    }
}

struct Transcript {
    base: i64,
    lines: Vec<String>,
}

impl Transcript {
    fn rel(&self, rev: i64) -> i64 {
        if rev == 0 { 0 } else { rev - self.base }
    }

    fn kvs(&self, kvs: &[etcd_client::KeyValue]) -> String {
        kvs.iter()
            .map(|kv| {
                format!(
                    "{}={}@c{}m{}v{}l{}",
                    kv.key_str().unwrap_or("?"),
                    kv.value_str().unwrap_or("?"),
                    self.rel(kv.create_revision()),
                    self.rel(kv.mod_revision()),
                    kv.version(),
                    kv.lease()
                )
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    fn push(&mut self, step: &str, line: String) {
        self.lines.push(format!("{step}: {line}"));
    }
}

async fn script(c: &mut Client) -> Vec<String> {
    let base = c
        .get("nothing", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    let mut t = Transcript {
        base,
        lines: Vec::new(),
    };

    for (k, v) in [
        ("a", "1"),
        ("b", "2"),
        ("c", "3"),
        ("p/x", "9"),
        ("p/y", "8"),
    ] {
        let r = c.put(k, v, None).await.unwrap();
        let h = t.rel(r.header().unwrap().revision());
        t.push("put", format!("{k} rev {h}"));
    }

    let cases: Vec<(&str, &str, GetOptions)> = vec![
        ("range", "a", GetOptions::new().with_range("c")),
        (
            "sorted",
            "",
            GetOptions::new()
                .with_all_keys()
                .with_sort(SortTarget::Value, SortOrder::Descend)
                .with_limit(2),
        ),
        (
            "by-mod",
            "",
            GetOptions::new()
                .with_all_keys()
                .with_sort(SortTarget::Mod, SortOrder::None),
        ),
        (
            "keys-only",
            "p/",
            GetOptions::new().with_prefix().with_keys_only(),
        ),
        (
            "count-only",
            "p/",
            GetOptions::new().with_prefix().with_count_only(),
        ),
        (
            "min-mod",
            "",
            GetOptions::new()
                .with_all_keys()
                .with_min_mod_revision(base + 3),
        ),
        (
            "max-create",
            "",
            GetOptions::new()
                .with_all_keys()
                .with_max_create_revision(base + 2),
        ),
        (
            "from-key",
            "b",
            GetOptions::new().with_from_key().with_limit(1),
        ),
        ("old-rev", "a", GetOptions::new().with_revision(base + 1)),
        ("future", "a", GetOptions::new().with_revision(base + 1000)),
    ];
    for (step, key, opts) in cases {
        let line = match c.get(key, Some(opts)).await {
            Ok(r) => format!(
                "[{}] count {} more {} rev {}",
                t.kvs(r.kvs()),
                r.count(),
                r.more(),
                t.rel(r.header().unwrap().revision())
            ),
            Err(e) => err(e),
        };
        t.push(step, line);
    }

    let puts: Vec<(&str, &str, &str, PutOptions)> = vec![
        ("prev-kv", "a", "11", PutOptions::new().with_prev_key()),
        (
            "ignore-value-missing",
            "zz",
            "",
            PutOptions::new().with_ignore_value(),
        ),
        (
            "ignore-value-with-value",
            "a",
            "x",
            PutOptions::new().with_ignore_value(),
        ),
        (
            "ignore-lease-with-lease",
            "a",
            "x",
            PutOptions::new().with_ignore_lease().with_lease(5),
        ),
        ("unknown-lease", "a", "x", PutOptions::new().with_lease(999)),
    ];
    for (step, k, v, opts) in puts {
        let line = match c.put(k, v, Some(opts)).await {
            Ok(r) => format!(
                "prev [{}] rev {}",
                t.kvs(
                    r.prev_key()
                        .into_iter()
                        .cloned()
                        .collect::<Vec<_>>()
                        .as_slice()
                ),
                t.rel(r.header().unwrap().revision())
            ),
            Err(e) => err(e),
        };
        t.push(step, line);
    }

    let g = c
        .lease_grant(60, Some(LeaseGrantOptions::new().with_id(12345)))
        .await
        .unwrap();
    t.push("lease-grant", format!("id {} ttl {}", g.id(), g.ttl()));
    let dup = c
        .lease_grant(60, Some(LeaseGrantOptions::new().with_id(12345)))
        .await
        .map(|_| "ok".to_string());
    t.push("lease-grant-again", dup.unwrap_or_else(err));
    c.put("l", "v1", Some(PutOptions::new().with_lease(12345)))
        .await
        .unwrap();
    c.put("l", "v2", Some(PutOptions::new().with_ignore_lease()))
        .await
        .unwrap();
    let l = c.get("l", None).await.unwrap();
    t.push("ignore-lease", t.kvs(l.kvs()));
    let ttl = c
        .lease_time_to_live(12345, Some(LeaseTimeToLiveOptions::new().with_keys()))
        .await
        .unwrap();
    let keys: Vec<String> = ttl
        .keys()
        .iter()
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect();
    t.push(
        "ttl",
        format!(
            "granted {} keys {keys:?} ttl>0 {}",
            ttl.granted_ttl(),
            ttl.ttl() > 0
        ),
    );

    let txn = Txn::new()
        .when([
            Compare::version("a", CompareOp::Equal, 2),
            Compare::value("b", CompareOp::Equal, "2"),
            Compare::create_revision("nope", CompareOp::Equal, 0),
        ])
        .and_then([
            TxnOp::put("a", "3", None),
            TxnOp::get("b", None),
            TxnOp::txn(
                Txn::new()
                    .when([Compare::mod_revision("c", CompareOp::Greater, 0)])
                    .and_then([TxnOp::delete(
                        "c",
                        Some(DeleteOptions::new().with_prev_key()),
                    )]),
            ),
        ])
        .or_else([TxnOp::get("a", None)]);
    let r = c.txn(txn).await.unwrap();
    let mut parts = Vec::new();
    for op in r.op_responses() {
        parts.push(match op {
            TxnOpResponse::Put(p) => format!(
                "put rev {}",
                t.rel(p.header().map(|h| h.revision()).unwrap_or(0))
            ),
            TxnOpResponse::Get(g) => format!("get [{}]", t.kvs(g.kvs())),
            TxnOpResponse::Delete(d) => format!("del {} [{}]", d.deleted(), t.kvs(d.prev_kvs())),
            TxnOpResponse::Txn(n) => {
                format!("txn {} ops {}", n.succeeded(), n.op_responses().len())
            }
        });
    }
    t.push(
        "txn",
        format!(
            "{} {} rev {}",
            r.succeeded(),
            parts.join("; "),
            t.rel(r.header().unwrap().revision())
        ),
    );
    let missing_value = Txn::new()
        .when([Compare::value("missing", CompareOp::NotEqual, "x")])
        .and_then([TxnOp::put("m", "1", None)]);
    let r = c.txn(missing_value).await.unwrap();
    t.push(
        "value-of-missing",
        format!(
            "{} rev {}",
            r.succeeded(),
            t.rel(r.header().unwrap().revision())
        ),
    );
    let over_range =
        Txn::new().when([Compare::version("p/", CompareOp::Greater, 0).with_range("p0")]);
    let r = c.txn(over_range).await.unwrap();
    t.push("range-compare", format!("{}", r.succeeded()));
    let dup = Txn::new().and_then([TxnOp::put("d", "1", None), TxnOp::delete("d", None)]);
    t.push(
        "dup",
        c.txn(dup).await.map(|_| "ok".into()).unwrap_or_else(err),
    );

    let d = c
        .delete(
            "p/",
            Some(DeleteOptions::new().with_prefix().with_prev_key()),
        )
        .await
        .unwrap();
    t.push(
        "delete",
        format!(
            "{} [{}] rev {}",
            d.deleted(),
            t.kvs(d.prev_kvs()),
            t.rel(d.header().unwrap().revision())
        ),
    );

    let now = c.get("x", None).await.unwrap().header().unwrap().revision();
    t.push(
        "compact",
        c.compact(now - 2, None)
            .await
            .map(|_| "ok".into())
            .unwrap_or_else(err),
    );
    t.push(
        "compact-again",
        c.compact(now - 3, None)
            .await
            .map(|_| "ok".into())
            .unwrap_or_else(err),
    );
    t.push(
        "compact-future",
        c.compact(now + 100, None)
            .await
            .map(|_| "ok".into())
            .unwrap_or_else(err),
    );
    let old = c
        .get("a", Some(GetOptions::new().with_revision(now - 3)))
        .await;
    t.push(
        "read-compacted",
        old.map(|_| "ok".into()).unwrap_or_else(err),
    );

    let mut w = c
        .watch("a", Some(WatchOptions::new().with_start_revision(now - 4)))
        .await
        .unwrap();
    let mut seen = Vec::new();
    while let Ok(Ok(Some(resp))) = tokio::time::timeout(Duration::from_secs(3), w.message()).await {
        seen.push(format!(
            "created {} canceled {} compact {} events {} reason {:?}",
            resp.created(),
            resp.canceled(),
            t.rel(resp.compact_revision()),
            resp.events().len(),
            resp.cancel_reason()
        ));
        if resp.canceled() {
            break;
        }
    }
    t.push("watch-compacted", seen.join(" | "));

    let mut w = c.watch("a", None).await.unwrap();
    let created = w.message().await.unwrap().unwrap();
    w.request_progress().await.unwrap();
    let progress = w.message().await.unwrap().unwrap();
    t.push(
        "progress",
        format!(
            "created {} id {} | events {} id {} rev {}",
            created.created(),
            created.watch_id(),
            progress.events().len(),
            progress.watch_id(),
            t.rel(progress.header().unwrap().revision())
        ),
    );

    t.push(
        "revoke",
        c.lease_revoke(12345)
            .await
            .map(|_| "ok".into())
            .unwrap_or_else(err),
    );
    t.push(
        "revoke-again",
        c.lease_revoke(12345)
            .await
            .map(|_| "ok".into())
            .unwrap_or_else(err),
    );
    let gone = c.get("l", None).await.unwrap();
    t.push(
        "lease-keys-gone",
        format!(
            "{} rev {}",
            gone.count(),
            t.rel(gone.header().unwrap().revision())
        ),
    );
    let ttl = c.lease_time_to_live(12345, None).await.unwrap();
    t.push("ttl-missing", format!("ttl {}", ttl.ttl()));
    let big = c
        .lease_grant(9_000_000_001, None)
        .await
        .map(|_| "ok".into())
        .unwrap_or_else(err);
    t.push("ttl-too-large", big);
    t.lines
}

#[test]
fn same_answers_as_real_etcd() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let etcd = Server::start(Kind::RealEtcd);
    let mk8s = Server::start(Kind::Mk8s);
    let (want, got) = rt.block_on(async {
        let want = script(&mut etcd.client().await).await;
        let got = script(&mut mk8s.client().await).await;
        (want, got)
    });
    let mut diffs = Vec::new();
    for (w, g) in want.iter().zip(&got) {
        if w != g {
            diffs.push(format!("etcd: {w}\nmk8s: {g}"));
        }
    }
    assert_eq!(want.len(), got.len());
    assert!(
        diffs.is_empty(),
        "transcripts differ:\n{}",
        diffs.join("\n\n")
    );
}
