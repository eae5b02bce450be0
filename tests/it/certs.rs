//! Certificates without downtime: on a running cluster a new host address or a serving
//! certificate near expiry gets the certificate re-issued by the supervisor's watch, and the
//! API server and kubelet serve the new one without a restart; a garbage certificate written
//! by hand leaves the old one served.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::cluster::Cluster;
use crate::util::*;

/// The supervisor's check period in these tests, in seconds.
const CHECK_PERIOD: &str = "1";
/// Components whose pids must survive every renewal.
const KEPT: &[&str] = &[
    "containerd",
    "datastore",
    "apiserver",
    "controller-manager",
    "scheduler",
    "kubelet",
];

/// A dummy interface (else an empty bridge) with one TEST-NET address (no packet is ever sent
/// to it), removed on drop, even when the test fails.
struct DummyAddress {
    link: String,
    ip: String,
}

impl DummyAddress {
    fn add(link: &str, ip: &str) -> Self {
        let run = |args: &[&str]| {
            let out = Command::new("ip").args(args).output().unwrap();
            assert!(out.status.success(), "ip {args:?}: {out:?}");
        };
        let _ = Command::new("ip")
            .args(["link", "del", link])
            .stderr(Stdio::null())
            .status();
        // A kernel without the dummy module: an empty bridge (no ports, never up) does as well.
        let dummy = Command::new("ip")
            .args(["link", "add", link, "type", "dummy"])
            .output()
            .unwrap();
        if !dummy.status.success() {
            run(&["link", "add", link, "type", "bridge"]);
        }
        let guard = Self {
            link: link.into(),
            ip: ip.into(),
        };
        run(&["addr", "add", &format!("{ip}/32"), "dev", link]);
        guard
    }
}

impl Drop for DummyAddress {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.link])
            .status();
    }
}

/// The serial of the certificate a TLS server at `127.0.0.1:port` presents (with a client
/// certificate, which the kubelet requires).
fn served_serial(certs: &Path, port: u16) -> String {
    let hello = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
        .arg("-cert")
        .arg(certs.join("apiserver-kubelet-client.crt"))
        .arg("-key")
        .arg(certs.join("apiserver-kubelet-client.key"))
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .unwrap();
    let mut x509 = Command::new("openssl")
        .args(["x509", "-noout", "-serial"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = x509.stdin.take().unwrap();
        stdin.write_all(&hello.stdout).unwrap();
    }
    let out = x509.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn file_serial(cert: &Path) -> String {
    x509_field(cert, "serial")
}

/// Polls `check` every 200 ms until it holds or `secs` pass; whether it held.
fn wait_for(secs: u64, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if check() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn arg_port(c: &Cluster, file: &str, flag: &str) -> u16 {
    let text = std::fs::read_to_string(c.data.join("args").join(file)).unwrap();
    text.lines()
        .rev()
        .find_map(|l| l.strip_prefix(&format!("--{flag}=")))
        .unwrap_or_else(|| panic!("no --{flag} in args/{file}"))
        .parse()
        .unwrap()
}

fn log(c: &Cluster, name: &str) -> String {
    std::fs::read_to_string(c.common.join(format!("var/log/{name}.log"))).unwrap_or_default()
}

fn pids(c: &Cluster) -> Vec<(&'static str, Option<u32>)> {
    KEPT.iter().map(|n| (*n, c.pid(n))).collect()
}

/// Moves a file into place in one rename, as a careful user (or an editor) would.
fn install(path: &Path, data: &[u8]) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, data).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A server certificate for `server.key` from `csr.conf`, signed by the cluster CA with openssl,
/// valid for `days`.
fn short_lived_server_cert(certs: &Path, days: u32) -> Vec<u8> {
    let tmp = tempfile::tempdir().unwrap();
    let crt = tmp.path().join("server.crt");
    crate::util::sign_server_cert_as_microk8s(certs, days, &crt);
    std::fs::read(&crt).unwrap()
}

#[test]
fn serving_certs_follow_addresses_and_expiry_without_restarts() {
    let c = Cluster::new();
    let out = c.mk8s_with_env(&["start"], &[("MK8S_CERT_CHECK_PERIOD", CHECK_PERIOD)]);
    assert!(out.status.success(), "{out:?}");
    c.ok(&["status", "--wait-ready", "--timeout", "60"]);
    let certs = c.data.join("certs");
    let server = certs.join("server.crt");
    let kubelet_server = certs.join("kubelet-server.crt");
    let api = c.api_port;
    let kubelet = arg_port(&c, "kubelet", "port");
    let before = pids(&c);
    assert!(before.iter().all(|(_, p)| p.is_some()), "{before:?}");
    let served_before = served_serial(&certs, api);
    assert_eq!(served_before, file_serial(&server));

    // (a) A new host address: both serving certificates gain it and are served at once.
    let n = api % 10_000;
    let ip = format!("192.0.2.{}", 10 + api % 200);
    let dummy = DummyAddress::add(&format!("mk8st{n}"), &ip);
    let started = Instant::now();
    assert!(
        wait_for(30, || sans(&server).contains(&dummy.ip)
            && sans(&kubelet_server).contains(&dummy.ip)),
        "{} never named {ip}: {:?}; supervisor log:\n{}",
        server.display(),
        sans(&server),
        log(&c, "supervisor")
    );
    let renewed_after = started.elapsed();
    assert!(
        wait_for(10, || served_serial(&certs, api) == file_serial(&server)),
        "the API server still serves {}",
        served_serial(&certs, api)
    );
    assert_ne!(served_serial(&certs, api), served_before);
    assert!(
        wait_for(10, || served_serial(&certs, kubelet)
            == file_serial(&kubelet_server)),
        "the kubelet still serves {}",
        served_serial(&certs, kubelet)
    );
    let csr_conf = std::fs::read_to_string(certs.join("csr.conf")).unwrap();
    assert!(csr_conf.contains(&format!("= {ip}")), "{csr_conf}");
    let sup = log(&c, "supervisor");
    assert!(
        sup.contains("renewed serving certificates")
            && sup.contains(&format!("lacks address {ip}")),
        "{sup}"
    );
    assert_eq!(pids(&c), before, "no component restarts");
    let got = c.kubectl(&["get", "ns", "default", "-o", "name"]);
    assert_eq!(String::from_utf8_lossy(&got.stdout), "namespace/default\n");
    eprintln!("new address to renewed certificates: {renewed_after:?}");

    // (b) A certificate 10 days from expiry is renewed to a full year and served.
    install(&server, &short_lived_server_cert(&certs, 10));
    let full_year = |p: &Path| {
        openssl(
            &certs,
            &[
                "x509",
                "-noout",
                "-checkend",
                "25920000",
                "-in",
                p.to_str().unwrap(),
            ],
        )
        .0
    };
    assert!(
        wait_for(30, || full_year(&server)),
        "still short-lived: {}; supervisor log:\n{}",
        x509_field(&server, "enddate"),
        log(&c, "supervisor")
    );
    assert!(
        wait_for(10, || served_serial(&certs, api) == file_serial(&server)),
        "the API server still serves {}",
        served_serial(&certs, api)
    );
    assert!(
        log(&c, "supervisor").contains("expires in 9 days"),
        "{}",
        log(&c, "supervisor")
    );
    assert_eq!(pids(&c), before, "no component restarts");

    // (c) Garbage by hand: the old certificate stays served, with a warning; the watch
    // leaves the file alone (it is the user's), and `refresh-certs` mends it without restarts.
    let good = served_serial(&certs, api);
    install(&server, b"not a certificate\n");
    for _ in 0..15 {
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(served_serial(&certs, api), good);
    }
    assert!(
        wait_for(10, || log(&c, "apiserver")
            .contains("cannot be used; keeping the old one")),
        "{}",
        log(&c, "apiserver")
    );
    assert!(
        wait_for(10, || log(&c, "supervisor")
            .contains("cannot check or renew serving certificates")),
        "{}",
        log(&c, "supervisor")
    );
    assert_eq!(std::fs::read(&server).unwrap(), b"not a certificate\n");
    let got = c.kubectl(&["get", "ns", "default", "-o", "name"]);
    assert_eq!(String::from_utf8_lossy(&got.stdout), "namespace/default\n");

    let out = c.ok(&["refresh-certs", "--cert", "server.crt"]);
    assert!(!out.contains("Restarting"), "{out}");
    assert!(
        wait_for(10, || served_serial(&certs, api) == file_serial(&server)),
        "the API server still serves {}",
        served_serial(&certs, api)
    );
    assert_ne!(served_serial(&certs, api), good);
    assert_eq!(pids(&c), before, "no component restarts");
    drop(dummy);
}
