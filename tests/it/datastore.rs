//! The datastore judged by real etcdctl 3.4, and the same script run against Debian's real
//! etcd 3.4, which shows the script checks etcd's behaviour and not ours.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::etcd::{Kind, Server, etcdctl_cmd};

/// The revision in a `-w json` answer's header.
fn revision(json: &str) -> i64 {
    let tail = &json[json.find("\"revision\":").expect("revision in header") + 11..];
    tail.split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// etcdctl's `txn` reads compares, success ops and failure ops from stdin, each section
/// ended by an empty line.
fn txn(
    s: &Server,
    compares: &[&str],
    success: &[&str],
    failure: &[&str],
) -> (bool, String, String) {
    let mut child = etcdctl_cmd(
        &s.endpoint(),
        &s.certs(),
        Some("apiserver-etcd-client"),
        &["txn"],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let mut script = String::new();
    for section in [compares, success, failure] {
        for line in section {
            script.push_str(line);
            script.push('\n');
        }
        script.push('\n');
    }
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn kv_and_ranges(s: &Server) {
    let k = format!("{:?}", s.kind);
    assert_eq!(s.ctl(&["put", "a", "1"]), "OK\n", "{k}");
    s.ctl(&["put", "abc", "2"]);
    s.ctl(&["put", "b", "3"]);
    s.ctl(&["put", "c", "4"]);
    assert_eq!(s.ctl(&["get", "a"]), "a\n1\n", "{k}");
    assert_eq!(s.ctl(&["get", "a", "--prefix"]), "a\n1\nabc\n2\n", "{k}");
    assert_eq!(
        s.ctl(&["get", "a", "c", "--keys-only"]),
        "a\n\nabc\n\nb\n\n",
        "{k}"
    );
    let count = s.ctl(&["get", "a", "--prefix", "--limit=1", "-w", "json"]);
    assert!(
        count.contains("\"count\":2") && count.contains("\"more\":true"),
        "{k}: {count}"
    );
    assert_eq!(
        s.ctl(&["get", "", "--from-key", "--limit=2", "--keys-only"]),
        "a\n\nabc\n\n",
        "{k}"
    );
    assert_eq!(
        s.ctl(&[
            "get",
            "a",
            "--prefix",
            "--sort-by=VALUE",
            "--order=DESCEND",
            "--print-value-only"
        ]),
        "2\n1\n",
        "{k}"
    );
    // History: the first value is readable at its revision.
    let rev1 = revision(&s.ctl(&["get", "a", "-w", "json"]));
    s.ctl(&["put", "a", "one"]);
    let json = s.ctl(&["get", "a", "-w", "json"]);
    assert!(json.contains("\"version\":2"), "{k}: {json}");
    assert_eq!(
        s.ctl(&["get", "a", &format!("--rev={rev1}"), "--print-value-only"]),
        "1\n",
        "{k}"
    );
    assert_eq!(s.ctl(&["del", "b"]), "1\n", "{k}");
    assert_eq!(s.ctl(&["get", "b"]), "", "{k}");
    assert_eq!(
        s.ctl(&["del", "a", "--prefix", "--prev-kv"]),
        "2\na\none\nabc\n2\n",
        "{k}"
    );
    let err = s.ctl_err(&["get", "c", "--rev=999999"]);
    assert!(
        err.contains("etcdserver: mvcc: required revision is a future revision"),
        "{k}: {err}"
    );
}

fn txns(s: &Server) {
    let k = format!("{:?}", s.kind);
    let (ok, out, err) = txn(
        s,
        &["mod(\"t\") = \"0\""],
        &["put t first"],
        &["put t second"],
    );
    assert!(ok, "{k}: {err}");
    assert_eq!(out, "SUCCESS\n\nOK\n", "{k}");
    let (_, out, _) = txn(
        s,
        &["mod(\"t\") = \"0\""],
        &["put t first"],
        &["put t second"],
    );
    assert_eq!(out, "FAILURE\n\nOK\n", "{k}");
    assert_eq!(
        s.ctl(&["get", "t", "--print-value-only"]),
        "second\n",
        "{k}"
    );
    let (_, out, _) = txn(
        s,
        &["value(\"t\") = \"second\"", "version(\"t\") > \"1\""],
        &["get t"],
        &[],
    );
    assert_eq!(out, "SUCCESS\n\nt\nsecond\n", "{k}");
    let (ok, _, err) = txn(s, &[], &["put d 1", "put d 2"], &[]);
    assert!(
        !ok && err.contains("etcdserver: duplicate key given in txn request"),
        "{k}: {err}"
    );
}

fn watches(s: &Server) {
    let k = format!("{:?}", s.kind);
    let mut watcher = etcdctl_cmd(
        &s.endpoint(),
        &s.certs(),
        Some("apiserver-etcd-client"),
        &["watch", "w", "--prefix", "--prev-kv"],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    // Give the watch time to be created before writing.
    std::thread::sleep(Duration::from_millis(700));
    s.ctl(&["put", "w1", "x"]);
    s.ctl(&["put", "other", "y"]);
    s.ctl(&["put", "w1", "z"]);
    s.ctl(&["del", "w1"]);
    std::thread::sleep(Duration::from_millis(700));
    let _ = watcher.kill();
    let mut out = String::new();
    watcher
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let _ = watcher.wait();
    assert_eq!(
        out, "PUT\nw1\nx\nPUT\nw1\nx\nw1\nz\nDELETE\nw1\nz\nw1\n\n",
        "{k}"
    );

    // A watch from an old revision replays history.
    let rev = revision(&s.ctl(&["put", "h", "1", "-w", "json"]));
    s.ctl(&["put", "h", "2"]);
    let mut replay = etcdctl_cmd(
        &s.endpoint(),
        &s.certs(),
        Some("apiserver-etcd-client"),
        &["watch", "h", &format!("--rev={rev}")],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    let _ = replay.kill();
    let mut out = String::new();
    replay
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let _ = replay.wait();
    assert_eq!(out, "PUT\nh\n1\nPUT\nh\n2\n", "{k}");
}

fn leases(s: &Server) {
    let k = format!("{:?}", s.kind);
    let granted = s.ctl(&["lease", "grant", "60"]);
    // "lease 694d... granted with TTL(60s)"
    let id = granted.split_whitespace().nth(1).unwrap().to_string();
    assert!(
        granted.ends_with("granted with TTL(60s)\n"),
        "{k}: {granted}"
    );
    s.ctl(&["put", "--lease", &id, "lk", "v"]);
    let ttl = s.ctl(&["lease", "timetolive", &id, "--keys"]);
    assert!(
        ttl.contains("granted with TTL(60s)") && ttl.contains("attached keys([lk])"),
        "{k}: {ttl}"
    );
    let once = s.ctl(&["lease", "keep-alive", "--once", &id]);
    assert!(once.contains("keepalived with TTL(60)"), "{k}: {once}");
    assert!(s.ctl(&["lease", "list"]).contains(&id), "{k}");
    assert_eq!(
        s.ctl(&["lease", "revoke", &id]),
        format!("lease {id} revoked\n"),
        "{k}"
    );
    assert_eq!(
        s.ctl(&["get", "lk"]),
        "",
        "{k}: revoking deletes attached keys"
    );
    let err = s.ctl_err(&["lease", "revoke", &id]);
    assert!(
        err.contains("etcdserver: requested lease not found"),
        "{k}: {err}"
    );
    let err = s.ctl_err(&["put", "--lease", &id, "lk", "v"]);
    assert!(
        err.contains("etcdserver: requested lease not found"),
        "{k}: {err}"
    );

    // Expiry deletes attached keys.
    let short = s.ctl(&["lease", "grant", "2"]);
    let sid = short.split_whitespace().nth(1).unwrap().to_string();
    s.ctl(&["put", "--lease", &sid, "ex1", "v"]);
    s.ctl(&["put", "--lease", &sid, "ex2", "v"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !s.ctl(&["get", "ex", "--prefix", "--keys-only"]).is_empty() {
        assert!(Instant::now() < deadline, "{k}: lease keys never expired");
        std::thread::sleep(Duration::from_millis(200));
    }
    let ttl = s.ctl(&["lease", "timetolive", &sid]);
    assert!(ttl.contains("already expired"), "{k}: {ttl}");
}

fn compaction(s: &Server) {
    let k = format!("{:?}", s.kind);
    let old = revision(&s.ctl(&["put", "cmp", "old", "-w", "json"]));
    let new = revision(&s.ctl(&["put", "cmp", "new", "-w", "json"]));
    assert_eq!(
        s.ctl(&["compaction", &new.to_string()]),
        format!("compacted revision {new}\n"),
        "{k}"
    );
    let err = s.ctl_err(&["get", "cmp", &format!("--rev={old}")]);
    assert!(
        err.contains("etcdserver: mvcc: required revision has been compacted"),
        "{k}: {err}"
    );
    assert_eq!(
        s.ctl(&["get", "cmp", &format!("--rev={new}"), "--print-value-only"]),
        "new\n",
        "{k}"
    );
    let err = s.ctl_err(&["compaction", &old.to_string()]);
    assert!(
        err.contains("etcdserver: mvcc: required revision has been compacted"),
        "{k}: {err}"
    );
}

fn cluster_and_maintenance(s: &Server) {
    let k = format!("{:?}", s.kind);
    let members = s.ctl(&["member", "list"]);
    assert!(
        members.contains(&s.endpoint()) && members.contains(&s.peer_endpoint()),
        "{k}: {members}"
    );
    let status = s.ctl(&["endpoint", "status", "-w", "json"]);
    assert!(status.contains("\"version\":\"3."), "{k}: {status}");
    let health = s.etcdctl(&["endpoint", "health"]);
    assert!(health.status.success(), "{k}");
    assert!(
        String::from_utf8_lossy(&health.stderr).contains("is healthy"),
        "{k}: {health:?}"
    );
    assert!(
        s.ctl(&["endpoint", "hashkv"]).contains(&s.endpoint()),
        "{k}"
    );
    assert!(s.ctl(&["alarm", "list"]).is_empty(), "{k}");
    s.ctl(&["defrag"]);
    let snap = s.data.path.join("snapshot.db");
    let out = s.ctl(&["snapshot", "save", snap.to_str().unwrap()]);
    assert!(out.contains("Snapshot saved at"), "{k}: {out}");
    assert!(std::fs::metadata(&snap).unwrap().len() > 0);
}

/// The whole script, against one server.
fn conformance(kind: Kind) {
    let s = Server::start(kind);
    kv_and_ranges(&s);
    txns(&s);
    watches(&s);
    leases(&s);
    compaction(&s);
    cluster_and_maintenance(&s);
}

#[test]
fn etcdctl_script_passes_against_mk8s_datastore() {
    conformance(Kind::Mk8s);
}

#[test]
fn etcdctl_script_passes_against_real_etcd() {
    conformance(Kind::RealEtcd);
}

#[test]
fn peer_port_serves_maintenance_and_cluster_only() {
    let s = Server::start(Kind::Mk8s);
    let peer = s.peer_endpoint();
    let status = s.etcdctl_at(&peer, "apiserver-etcd-client", &["endpoint", "status"]);
    assert!(status.status.success(), "{status:?}");
    let members = s.etcdctl_at(&peer, "apiserver-etcd-client", &["member", "list"]);
    assert!(members.status.success(), "{members:?}");
    let snap = s.data.path.join("peer-snapshot.db");
    let saved = s.etcdctl_at(
        &peer,
        "apiserver-etcd-client",
        &["snapshot", "save", snap.to_str().unwrap()],
    );
    assert!(saved.status.success(), "{saved:?}");
    let get = s.etcdctl_at(&peer, "apiserver-etcd-client", &["get", "x"]);
    assert!(!get.status.success(), "KV is not served on the peer port");
}

#[test]
fn clients_without_a_cluster_certificate_are_refused() {
    for kind in [Kind::Mk8s, Kind::RealEtcd] {
        let s = Server::start(kind);
        let anonymous = etcdctl_cmd(&s.endpoint(), &s.certs(), None, &["get", "x"])
            .output()
            .unwrap();
        assert!(
            !anonymous.status.success(),
            "{kind:?}: no client cert must be refused"
        );
        // A client certificate from another cluster's CA.
        let other = crate::util::DataDir::bootstrapped();
        let mut cmd = etcdctl_cmd(&s.endpoint(), &s.certs(), None, &["get", "x"]);
        cmd.arg(format!(
            "--cert={}",
            other.certs().join("admin.crt").display()
        ))
        .arg(format!(
            "--key={}",
            other.certs().join("admin.key").display()
        ));
        let foreign = cmd.output().unwrap();
        assert!(
            !foreign.status.success(),
            "{kind:?}: a foreign CA must be refused"
        );
        // The server still serves the rightful client.
        assert_eq!(s.ctl(&["put", "x", "1"]), "OK\n");
    }
}

#[test]
fn garbage_and_vanishing_clients_do_not_stop_the_server() {
    let s = Server::start(Kind::Mk8s);
    for payload in [
        &b"GET / HTTP/1.1\r\n\r\n"[..],
        &[0x16, 0x03, 0x01, 0xff, 0xff, 0, 0][..],
        &[0u8; 4096][..],
    ] {
        let mut sock = TcpStream::connect(("127.0.0.1", s.client_port)).unwrap();
        let _ = sock.write_all(payload);
        drop(sock);
    }
    // A watcher that vanishes mid-stream.
    let mut w = etcdctl_cmd(
        &s.endpoint(),
        &s.certs(),
        Some("apiserver-etcd-client"),
        &["watch", "v"],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let _ = w.kill();
    let _ = w.wait();
    s.ctl(&["put", "v", "1"]);
    assert_eq!(s.ctl(&["get", "v", "--print-value-only"]), "1\n");
}

#[test]
fn oversized_and_overfull_requests_get_etcd_errors() {
    for kind in [Kind::Mk8s, Kind::RealEtcd] {
        let s = Server::start(kind);
        // etcdctl reads the value from stdin when none is given.
        let out = s.put_stdin("big", 1536 * 1024 + 10);
        assert!(!out.status.success(), "{kind:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("etcdserver: request is too large"),
            "{kind:?}: {err}"
        );
        let ops: Vec<String> = (0..129).map(|i| format!("put k{i} v")).collect();
        let ops: Vec<&str> = ops.iter().map(String::as_str).collect();
        let (ok, _, err) = txn(&s, &[], &ops, &[]);
        assert!(
            !ok && err.contains("etcdserver: too many operations in txn request"),
            "{kind:?}: {err}"
        );
        assert_eq!(s.ctl(&["put", "small", "ok"]), "OK\n", "{kind:?}");
    }
}

#[test]
fn snapshots_restore_with_every_key() {
    let mut s = Server::start(Kind::Mk8s);
    for i in 0..50 {
        s.ctl(&["put", &format!("snap/{i:02}"), &format!("v{i}")]);
    }
    let from_etcdctl = s.data.path.join("etcdctl.db");
    s.ctl(&["snapshot", "save", from_etcdctl.to_str().unwrap()]);
    let from_dbctl = s.data.path.join("dbctl.db");
    let out = s
        .data
        .ok(&["dbctl", "backup", from_dbctl.to_str().unwrap()]);
    assert!(out.starts_with("Backed up the datastore to"), "{out}");
    s.ctl(&["put", "snap/after", "x"]);

    let err = s
        .data
        .fails(&["dbctl", "restore", from_dbctl.to_str().unwrap()]);
    assert!(err.contains("the datastore is running"), "{err}");

    for backup in [&from_etcdctl, &from_dbctl] {
        s.kill9();
        s.data.ok(&["dbctl", "restore", backup.to_str().unwrap()]);
        s.restart();
        let keys = s.ctl(&["get", "snap/", "--prefix", "--keys-only"]);
        let keys: Vec<&str> = keys.lines().filter(|l| !l.is_empty()).collect();
        let expected: Vec<String> = (0..50).map(|i| format!("snap/{i:02}")).collect();
        assert_eq!(keys, expected, "{}", backup.display());
        assert_eq!(s.ctl(&["get", "snap/07", "--print-value-only"]), "v7\n");
        s.ctl(&["put", "snap/after", "x"]);
    }

    s.kill9();
    let mut bytes = std::fs::read(&from_dbctl).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    let corrupt = s.data.path.join("corrupt.db");
    std::fs::write(&corrupt, &bytes).unwrap();
    let err = s
        .data
        .fails(&["dbctl", "restore", corrupt.to_str().unwrap()]);
    assert!(
        err.contains("is not a datastore backup: checksum mismatch"),
        "{err}"
    );
}

/// `dbSize` from `endpoint status -w json`.
fn db_size(s: &Server) -> u64 {
    let json = s.ctl(&["endpoint", "status", "-w", "json"]);
    let tail = &json[json.find("\"dbSize\":").expect("dbSize") + 9..];
    tail.split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn history_is_compacted_automatically_and_defrag_shrinks_the_file() {
    let s = Server::start_with(Kind::Mk8s, &["--auto-compaction-retention=1s"]);
    let old = revision(&s.ctl(&["put", "auto", "1", "-w", "json"]));
    s.ctl(&["put", "auto", "2"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = s.etcdctl(&["get", "auto", &format!("--rev={old}")]);
        if String::from_utf8_lossy(&out.stderr).contains("required revision has been compacted") {
            break;
        }
        assert!(Instant::now() < deadline, "history was never compacted");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(s.ctl(&["get", "auto", "--print-value-only"]), "2\n");

    // Churn: fill, delete, let compaction drop the history, then defragment.
    for key in ["big", "big0", "big1", "big2", "big3"] {
        assert!(s.put_stdin(key, 1024 * 1024).status.success());
    }
    s.ctl(&["del", "big", "--prefix"]);
    let grown = db_size(&s);
    std::thread::sleep(Duration::from_millis(2500));
    s.ctl(&["defrag"]);
    let shrunk = db_size(&s);
    assert!(
        shrunk < grown,
        "defragment must shrink the file: {grown} -> {shrunk}"
    );
}
