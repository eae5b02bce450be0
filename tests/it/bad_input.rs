//! Bad input: one line naming the problem, a non-zero exit, and every file left as it was.

use std::fs;
use std::process::Command;

use crate::util::*;

/// Edits the template with `edit`, then expects `args` to fail with `expect` and no change.
fn template_rejected(edit: impl Fn(&str) -> String, expect: &str) {
    let d = DataDir::bootstrapped();
    let path = d.file("certs/csr.conf.template");
    let text = fs::read_to_string(&path).unwrap();
    fs::write(&path, edit(&text)).unwrap();
    for args in [
        &["refresh-certs", "--cert", "server.crt"][..],
        &["bootstrap"][..],
    ] {
        let before = d.snapshot();
        let err = d.fails(args);
        assert!(err.contains(expect), "{args:?}: {err}");
        assert!(
            err.contains("csr.conf.template"),
            "the file must be named: {err}"
        );
        assert_eq!(
            before,
            d.snapshot(),
            "{args:?} must leave every file untouched"
        );
    }
}

#[test]
fn template_without_alt_names_is_rejected() {
    template_rejected(
        |t| t.replace("[ alt_names ]", "[ names ]"),
        "no [ alt_names ] section",
    );
}

#[test]
fn ip_that_is_not_an_ip_is_rejected_with_its_line() {
    template_rejected(
        |t| t.replace("#MOREIPS", "IP.3 = 10.0.0.300\n#MOREIPS"),
        "IP.3 = '10.0.0.300' is not an IP address",
    );
    let line = include_str!("../../certs-templates/csr.conf.template")
        .lines()
        .position(|l| l.trim() == "#MOREIPS")
        .unwrap()
        + 1;
    template_rejected(
        |t| t.replace("#MOREIPS", "IP.3 = 10.0.0.300\n#MOREIPS"),
        &format!("csr.conf.template:{line}:"),
    );
}

#[test]
fn duplicate_key_is_rejected() {
    template_rejected(
        |t| t.replace("#MOREIPS", "DNS.1 = again.example\n#MOREIPS"),
        "duplicate key 'DNS.1'",
    );
}

#[test]
fn unknown_cert_lists_the_valid_ones() {
    let d = DataDir::bootstrapped();
    let before = d.snapshot();
    let err = d.fails(&["refresh-certs", "--cert", "apiserver.crt"]);
    assert!(
        err.contains("unknown certificate 'apiserver.crt'")
            && err.contains("server.crt, front-proxy-client.crt, ca.crt"),
        "{err}"
    );
    assert_eq!(before, d.snapshot());
}

#[test]
fn undo_without_backup_fails() {
    let d = DataDir::bootstrapped();
    let before = d.snapshot();
    let err = d.fails(&["refresh-certs", "--undo"]);
    assert!(
        err.contains("no backup in") && err.contains("certs-backup"),
        "{err}"
    );
    assert_eq!(before, d.snapshot());
}

#[test]
fn corrupted_keys_are_refused_not_replaced() {
    // A new CA or service-account key would silently invalidate everything issued before.
    for key in ["ca.key", "front-proxy-ca.key", "serviceaccount.key"] {
        let d = DataDir::bootstrapped();
        fs::write(
            d.file(&format!("certs/{key}")),
            b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let before = d.snapshot();
        for args in [
            &["bootstrap"][..],
            &["refresh-certs", "--cert", "server.crt"][..],
        ] {
            let err = d.fails(args);
            assert!(
                err.contains(key) && err.contains("not a valid private key"),
                "{err}"
            );
            assert_eq!(before, d.snapshot(), "{key}: {args:?}");
        }
    }
}

#[test]
fn a_directory_in_the_way_fails_before_anything_changes() {
    let d = DataDir::bootstrapped();
    fs::remove_file(d.file("credentials/proxy.config")).unwrap();
    fs::create_dir(d.file("credentials/proxy.config")).unwrap();
    let before = d.snapshot();
    let err = d.fails(&["refresh-certs", "--cert", "ca.crt"]);
    assert!(
        err.contains("proxy.config") && err.contains("directory is in the way"),
        "{err}"
    );
    assert_eq!(before, d.snapshot());
    // Nothing was left half-done: other commands still work.
    d.ok(&["refresh-certs", "--check"]);
    d.ok(&["config", "--use-loopback"]);
}

#[test]
fn data_dir_under_a_file_is_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let blocker = tmp.path().join("file");
    fs::write(&blocker, b"x").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mk8s"))
        .args(["bootstrap", "--data-dir"])
        .arg(blocker.join("data"))
        .arg("--common-dir")
        .arg(blocker.join("common"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(&blocker.display().to_string()) && err.contains("Not a directory"),
        "{err}"
    );
}

/// A read-only mount (root ignores permission bits, so a real read-only file system is the
/// honest test); unmounted even if the test fails.
#[test]
fn read_only_data_dir_fails_cleanly() {
    let d = DataDir::bootstrapped();
    let before = d.snapshot();
    let ro = ReadOnlyBind::new(&d.path);
    let err = d.fails(&["refresh-certs", "--cert", "server.crt"]);
    assert!(err.contains("Read-only file system"), "{err}");
    // Reading still works on a read-only data dir.
    let check = d.ok(&["refresh-certs", "--check"]);
    assert!(check.contains("The CA certificate"), "{check}");
    // A complete data dir bootstraps read-only: there is nothing to write.
    assert!(d.ok(&["bootstrap"]).contains("already bootstrapped"));
    drop(ro);
    assert_eq!(before, d.snapshot());
}

struct ReadOnlyBind {
    path: std::path::PathBuf,
}

impl ReadOnlyBind {
    fn new(path: &std::path::Path) -> Self {
        let mount = |args: &[&str]| {
            let st = Command::new("mount").args(args).arg(path).status().unwrap();
            assert!(
                st.success(),
                "mount {args:?} failed (the tests run as root)"
            );
        };
        mount(&["--bind", path.to_str().unwrap()]);
        let guard = Self {
            path: path.to_path_buf(),
        };
        mount(&["-o", "remount,ro,bind"]);
        guard
    }
}

impl Drop for ReadOnlyBind {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.path).status();
    }
}
