//! A crash in the middle of a refresh leaves the old complete set or the new complete set.
//!
//! `MK8S_FAULT_INJECT=<point>` makes mk8s SIGKILL itself at that point of its transaction:
//! after staging (before the commit point), right after the commit point, and after the first
//! file was moved into place. The next command (any of them) finishes or discards the journal.

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;

use crate::util::*;

/// Checks the live set hangs together: every leaf verifies against the CA on disk and every
/// kubeconfig embeds that CA.
fn assert_consistent(d: &DataDir) {
    for name in CA_SIGNED {
        assert!(
            verifies(&d.certs(), "ca.crt", &format!("{name}.crt")),
            "{name}.crt"
        );
    }
    assert!(verifies(
        &d.certs(),
        "front-proxy-ca.crt",
        "front-proxy-client.crt"
    ));
    let ca = d.read("certs/ca.crt");
    let ca_b64 = String::from_utf8(
        std::process::Command::new("base64")
            .args(["-w0"])
            .arg(d.file("certs/ca.crt"))
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert!(!ca.is_empty());
    for kc in KUBECONFIGS {
        let text = String::from_utf8(d.read(&format!("credentials/{kc}"))).unwrap();
        assert!(text.contains(&ca_b64), "{kc} embeds another CA");
    }
}

fn crash_refresh_at(point: &str) -> (DataDir, BTreeMap<String, Vec<u8>>) {
    let d = DataDir::bootstrapped();
    let before = d.live_set();
    let out = d.mk8s_env(
        &["refresh-certs", "--cert", "ca.crt"],
        &[("MK8S_FAULT_INJECT", point)],
    );
    assert_eq!(
        out.status.signal(),
        Some(9),
        "mk8s must die at {point}: {out:?}"
    );
    (d, before)
}

#[test]
fn crash_before_commit_leaves_the_old_set() {
    let (d, before) = crash_refresh_at("txn-staged");
    assert_eq!(
        d.live_set(),
        before,
        "nothing may change before the commit point"
    );
    // The next command discards the staged journal; still the old set.
    d.ok(&["refresh-certs", "--check"]);
    assert_eq!(d.live_set(), before);
    assert_consistent(&d);
    // The failed refresh left no backup behind to undo.
    assert!(d.mk8s(&["refresh-certs", "--undo"]).status.code() == Some(1));
}

#[test]
fn crash_after_commit_completes_the_new_set() {
    for point in ["txn-committed", "txn-applying"] {
        let (d, before) = crash_refresh_at(point);
        d.ok(&["refresh-certs", "--check"]);
        let after = d.live_set();
        assert_ne!(
            after["certs/ca.crt"], before["certs/ca.crt"],
            "{point}: new CA expected"
        );
        for (rel, data) in &before {
            if rel.ends_with(".crt") && !rel.contains("front-proxy") {
                assert_ne!(&after[rel], data, "{point}: {rel} must be new");
            }
        }
        assert_consistent(&d);
        // And the backup written in the same transaction undoes it exactly.
        d.ok(&["refresh-certs", "--undo"]);
        assert_eq!(d.live_set(), before, "{point}");
    }
}

#[test]
fn crash_during_first_bootstrap_is_finished_or_redone() {
    for point in ["txn-staged", "txn-committed", "txn-applying"] {
        let d = DataDir::new();
        let out = d.mk8s_env(&["bootstrap"], &[("MK8S_FAULT_INJECT", point)]);
        assert_eq!(out.status.signal(), Some(9), "{point}");
        d.ok(&["bootstrap"]);
        assert_consistent(&d);
        assert!(
            d.ok(&["bootstrap"]).contains("already bootstrapped"),
            "{point}"
        );
    }
}
