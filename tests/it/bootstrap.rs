//! `mk8s bootstrap`: what a first start leaves on disk, judged by openssl.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use crate::util::*;

#[test]
fn bootstrap_issues_every_cert_signed_by_its_ca() {
    let d = DataDir::bootstrapped();
    let certs = d.certs();
    assert!(verifies(&certs, "ca.crt", "ca.crt"));
    for name in CA_SIGNED {
        assert!(
            verifies(&certs, "ca.crt", &format!("{name}.crt")),
            "{name}.crt"
        );
    }
    assert!(verifies(
        &certs,
        "front-proxy-ca.crt",
        "front-proxy-client.crt"
    ));
    assert!(!verifies(&certs, "ca.crt", "front-proxy-client.crt"));
    for key in [
        "serviceaccount.key",
        "ca.key",
        "front-proxy-ca.key",
        "server.key",
    ] {
        let (ok, text) = openssl(&certs, &["pkey", "-noout", "-in", key]);
        assert!(ok, "{key}: {text}");
    }
}

#[test]
fn components_get_upstream_identities() {
    let d = DataDir::bootstrapped();
    let node = String::from_utf8(
        std::process::Command::new("hostname")
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .to_ascii_lowercase();
    let subject = |n: &str| x509_field(&d.certs().join(format!("{n}.crt")), "subject");
    assert_eq!(subject("admin"), "subject=CN=admin,O=system:masters");
    assert_eq!(
        subject("kubelet"),
        format!("subject=CN=system:node:{node},O=system:nodes")
    );
    assert_eq!(
        subject("controller"),
        "subject=CN=system:kube-controller-manager"
    );
    assert_eq!(subject("scheduler"), "subject=CN=system:kube-scheduler");
    assert_eq!(subject("proxy"), "subject=CN=system:kube-proxy");
    assert_eq!(subject("dns"), "subject=CN=system:kube-dns");
    assert_eq!(
        subject("front-proxy-client"),
        "subject=CN=front-proxy-client"
    );
    assert_eq!(subject("ca"), "subject=CN=10.152.183.1");
    assert_eq!(
        subject("server"),
        "subject=CN=127.0.0.1,OU=Canonical,O=Canonical,L=Canonical,ST=Canonical,C=GB"
    );
    let ca_text = x509_text(&d.certs().join("ca.crt"));
    assert!(ca_text.contains("CA:TRUE"), "{ca_text}");
}

#[test]
fn server_cert_has_template_sans_and_host_ips() {
    let d = DataDir::bootstrapped();
    let sans = sans(&d.certs().join("server.crt"));
    for want in [
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster",
        "kubernetes.default.svc.cluster.local",
        "127.0.0.1",
        "10.152.183.1",
    ] {
        assert!(
            sans.contains(&want.to_string()),
            "{want} missing from {sans:?}"
        );
    }
    for ip in host_ips() {
        assert!(
            sans.contains(&normalize_ip(&ip)),
            "host IP {ip} missing from {sans:?}"
        );
    }
    // Host IPs are numbered from IP.3 in the rendered csr.conf.
    let conf = String::from_utf8(d.read("certs/csr.conf")).unwrap();
    if let Some(first) = host_ips().first() {
        assert!(
            conf.contains(&format!("IP.3 = {}", normalize_ip(first))),
            "{conf}"
        );
    }
    assert!(!conf.contains("#MOREIPS"));
}

#[test]
fn rendered_csr_conf_is_accepted_by_openssl_as_is() {
    let d = DataDir::bootstrapped();
    let certs = d.certs();
    // Signed the way MicroK8s signs it, with the v3_ext section.
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("server.crt");
    crate::util::sign_server_cert_as_microk8s(&certs, 365, &out);
    assert_eq!(sans(&out), sans(&certs.join("server.crt")));
}

#[test]
fn bootstrap_again_keeps_every_file() {
    let d = DataDir::bootstrapped();
    let before = d.snapshot();
    let out = d.ok(&["bootstrap"]);
    assert!(out.contains("already bootstrapped"), "{out}");
    assert_eq!(before, d.snapshot());
}

#[test]
fn bootstrap_replaces_an_invalid_leaf_but_keeps_the_rest() {
    let d = DataDir::bootstrapped();
    let before = d.snapshot();
    fs::write(d.file("certs/admin.crt"), b"not a cert").unwrap();
    d.ok(&["bootstrap"]);
    let after = d.snapshot();
    assert!(verifies(&d.certs(), "ca.crt", "admin.crt"));
    for (rel, data) in &before {
        let changed = after.get(rel) != Some(data);
        let expected = matches!(
            rel.as_str(),
            "certs/admin.crt" | "certs/admin.key" | "credentials/client.config"
        );
        assert_eq!(changed, expected, "{rel}");
    }
}

#[test]
fn secrets_are_private() {
    let d = DataDir::bootstrapped();
    let mode = |rel: &str| fs::metadata(d.file(rel)).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode("certs"), 0o700);
    assert_eq!(mode("credentials"), 0o700);
    for (rel, _) in d.snapshot() {
        if rel.ends_with(".key") || rel.starts_with("credentials/") {
            assert_eq!(mode(&rel), 0o600, "{rel}");
        }
    }
    let tokens = String::from_utf8(d.read("credentials/known_tokens.csv")).unwrap();
    let users: Vec<&str> = tokens
        .lines()
        .map(|l| l.split(',').nth(1).unwrap())
        .collect();
    assert!(
        users.contains(&"admin") && users.contains(&"system:kube-proxy"),
        "{users:?}"
    );
    assert!(
        tokens
            .lines()
            .next()
            .unwrap()
            .ends_with(",admin,admin,\"system:masters\"")
    );
    let basic = String::from_utf8(d.read("credentials/basic_auth.csv")).unwrap();
    assert!(
        basic
            .trim_end()
            .ends_with(",admin,admin,\"system:masters\""),
        "{basic}"
    );
}

#[test]
fn help_lists_only_working_commands() {
    let d = DataDir::new();
    let help = d.ok(&["--help"]);
    for cmd in [
        "start",
        "stop",
        "status",
        "kubectl",
        "bootstrap",
        "config",
        "refresh-certs",
        "dbctl",
        "daemon",
        "enable",
        "disable",
    ] {
        assert!(help.contains(cmd), "{help}");
    }
    // An unknown addon is one line naming the ones there are.
    let out = d.mk8s(&["enable", "dashboard"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "error: addon \"dashboard\" not found; available: dns, rbac\n"
    );
}
