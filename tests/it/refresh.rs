//! `mk8s refresh-certs`: renewals, `--check`, `--undo`, as MicroK8s.

use std::fs;

use crate::util::*;

#[test]
fn refresh_server_cert_adds_template_san() {
    let d = DataDir::bootstrapped();
    let template = d.file("certs/csr.conf.template");
    let text = fs::read_to_string(&template).unwrap();
    fs::write(
        &template,
        text.replace("#MOREIPS", "DNS.6 = mydomain.example\n#MOREIPS"),
    )
    .unwrap();
    let old_serial = x509_field(&d.certs().join("server.crt"), "serial");
    let ca_before = d.read("certs/ca.crt");

    let out = d.ok(&["refresh-certs", "--cert", "server.crt"]);
    assert!(
        out.contains("Took a backup of the current certificates under"),
        "{out}"
    );

    let server = d.certs().join("server.crt");
    let sans = sans(&server);
    assert!(sans.contains(&"mydomain.example".to_string()), "{sans:?}");
    for ip in host_ips() {
        assert!(
            sans.contains(&normalize_ip(&ip)),
            "{ip} missing from {sans:?}"
        );
    }
    assert_ne!(
        x509_field(&server, "serial"),
        old_serial,
        "the old serial must be gone"
    );
    assert_eq!(d.read("certs/ca.crt"), ca_before, "the CA must not change");
    assert!(verifies(&d.certs(), "ca.crt", "server.crt"));
    // The template stays the user's file, edit included.
    assert!(
        fs::read_to_string(&template)
            .unwrap()
            .contains("DNS.6 = mydomain.example")
    );
}

#[test]
fn refresh_front_proxy_client_touches_nothing_else() {
    let d = DataDir::bootstrapped();
    let before = d.live_set();
    d.ok(&["refresh-certs", "--cert", "front-proxy-client.crt"]);
    let after = d.live_set();
    for (rel, data) in &before {
        let changed = after.get(rel) != Some(data);
        let expected = rel.starts_with("certs/front-proxy-client.");
        assert_eq!(changed, expected, "{rel}");
    }
    assert!(verifies(
        &d.certs(),
        "front-proxy-ca.crt",
        "front-proxy-client.crt"
    ));
}

#[test]
fn refresh_ca_reissues_everything_it_signed_and_undo_restores_bytes() {
    let d = DataDir::bootstrapped();
    let before = d.live_set();
    d.ok(&["refresh-certs", "--cert", "ca.crt"]);
    let after = d.live_set();
    assert_ne!(before["certs/ca.crt"], after["certs/ca.crt"]);
    for name in CA_SIGNED {
        assert!(
            verifies(&d.certs(), "ca.crt", &format!("{name}.crt")),
            "{name}"
        );
        assert_ne!(
            before[&format!("certs/{name}.crt")],
            after[&format!("certs/{name}.crt")]
        );
    }
    // Kubeconfigs carry the new CA; tokens and the front-proxy CA are untouched.
    let ca_b64 = base64_of(&after["certs/ca.crt"]);
    for kc in KUBECONFIGS {
        let text = String::from_utf8(after[&format!("credentials/{kc}")].clone()).unwrap();
        assert!(text.contains(&ca_b64), "{kc} must embed the new CA");
    }
    for same in [
        "credentials/known_tokens.csv",
        "certs/front-proxy-ca.crt",
        "certs/serviceaccount.key",
    ] {
        assert_eq!(before[same], after[same], "{same}");
    }

    let mode = |rel: &str| {
        use std::os::unix::fs::PermissionsExt;
        fs::metadata(d.file(rel)).unwrap().permissions().mode() & 0o777
    };
    for dir in [
        "certs-backup",
        "certs-backup/certs",
        "certs-backup/credentials",
    ] {
        assert_eq!(mode(dir), 0o700, "{dir} holds keys");
    }

    d.ok(&["refresh-certs", "--undo"]);
    assert_eq!(
        d.live_set(),
        before,
        "undo must restore byte-identical files"
    );
    let err = d.fails(&["refresh-certs", "--undo"]);
    assert!(err.contains("no backup"), "{err}");
}

#[test]
fn check_prints_expiry_as_microk8s() {
    let d = DataDir::bootstrapped();
    let out = d.ok(&["refresh-certs", "--check"]);
    assert_eq!(
        out,
        "The CA certificate will expire in 3649 days.\n\
         The server certificate will expire in 364 days.\n\
         The front proxy client certificate will expire in 364 days.\n"
    );
}

#[test]
fn no_option_lists_the_choices_and_fails() {
    let d = DataDir::bootstrapped();
    let out = d.mk8s(&["refresh-certs"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    for c in ["'server.crt'", "'front-proxy-client.crt'", "'ca.crt'"] {
        assert!(err.contains(c), "{err}");
    }
}

fn base64_of(data: &[u8]) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new("base64")
        .arg("-w0")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(data).unwrap();
    String::from_utf8(child.wait_with_output().unwrap().stdout).unwrap()
}

#[test]
fn undo_removes_what_the_refresh_created() {
    let d = DataDir::bootstrapped();
    fs::remove_file(d.file("certs/datastore.crt")).unwrap();
    fs::remove_file(d.file("certs/datastore.key")).unwrap();
    let before = d.live_set();
    d.ok(&["refresh-certs", "--cert", "ca.crt"]);
    assert!(verifies(&d.certs(), "ca.crt", "datastore.crt"));
    d.ok(&["refresh-certs", "--undo"]);
    assert_eq!(d.live_set(), before);
}

#[test]
fn concurrent_refreshes_never_mix_sets() {
    let d = DataDir::bootstrapped();
    let bin = env!("CARGO_BIN_EXE_mk8s");
    for _ in 0..8 {
        let spawn = |cert: &str| {
            std::process::Command::new(bin)
                .args(["refresh-certs", "--cert", cert, "--data-dir"])
                .arg(&d.path)
                .arg("--common-dir")
                .arg(d.common())
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap()
        };
        let mut a = spawn("ca.crt");
        let mut b = spawn("server.crt");
        assert!(a.wait().unwrap().success() && b.wait().unwrap().success());
        for name in CA_SIGNED {
            assert!(
                verifies(&d.certs(), "ca.crt", &format!("{name}.crt")),
                "{name}"
            );
        }
    }
}
