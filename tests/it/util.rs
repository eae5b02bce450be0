//! Helpers shared by the integration tests.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A temporary `$SNAP_DATA`, removed on drop.
pub struct DataDir {
    _tmp: tempfile::TempDir,
    pub path: PathBuf,
}

impl DataDir {
    /// `$SNAP_COMMON` of this test's daemons (run files, tokens), beside the data dir: never
    /// the machine's `/var/snap/mk8s/common`, which parallel tests would share.
    pub fn common(&self) -> PathBuf {
        self.path.with_file_name("common")
    }

    pub fn new() -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("data");
        Self { _tmp: tmp, path }
    }

    /// A data dir already bootstrapped.
    pub fn bootstrapped() -> Self {
        let d = Self::new();
        d.ok(&["bootstrap"]);
        d
    }

    pub fn certs(&self) -> PathBuf {
        self.path.join("certs")
    }

    pub fn file(&self, rel: &str) -> PathBuf {
        self.path.join(rel)
    }

    pub fn read(&self, rel: &str) -> Vec<u8> {
        fs::read(self.file(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
    }

    /// Runs `mk8s <args> --data-dir <this>`.
    pub fn mk8s(&self, args: &[&str]) -> Output {
        self.mk8s_env(args, &[])
    }

    pub fn mk8s_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut c = Command::new(env!("CARGO_BIN_EXE_mk8s"));
        c.args(args)
            .arg("--data-dir")
            .arg(&self.path)
            .arg("--common-dir")
            .arg(self.common());
        c.env_remove("MK8S_SNAP_DATA")
            .env_remove("MK8S_FAULT_INJECT");
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().expect("run mk8s")
    }

    /// Runs mk8s and requires success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.mk8s(args);
        assert!(
            out.status.success(),
            "mk8s {args:?} failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs mk8s and requires a failure with exactly one line on stderr; returns that line.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.mk8s(args);
        assert!(!out.status.success(), "mk8s {args:?} should fail");
        assert!(
            out.status.code().is_some(),
            "mk8s {args:?} died: {}",
            out.status
        );
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(err.lines().count(), 1, "one line expected, got: {err}");
        assert!(
            out.stdout.is_empty(),
            "a failure prints nothing on stdout: {out:?}"
        );
        assert!(!err.contains("panicked"), "{err}");
        err.trim_end().to_string()
    }

    /// Every file of `certs/`, `credentials/` and `certs-backup/` by relative path.
    pub fn snapshot(&self) -> BTreeMap<String, Vec<u8>> {
        let mut m = BTreeMap::new();
        for d in ["certs", "credentials", "certs-backup"] {
            walk(&self.path, &self.path.join(d), &mut m);
        }
        m
    }

    /// Only `certs/` and `credentials/`: the live set.
    pub fn live_set(&self) -> BTreeMap<String, Vec<u8>> {
        let mut m = self.snapshot();
        m.retain(|k, _| !k.starts_with("certs-backup/"));
        m
    }
}

fn walk(root: &Path, dir: &Path, m: &mut BTreeMap<String, Vec<u8>>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(root, &p, m);
        } else {
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            m.insert(rel, fs::read(&p).unwrap());
        }
    }
}

/// Runs `openssl` with `args` in `dir`; returns (success, stdout + stderr).
pub fn openssl(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl must be installed");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// Signs a server certificate for `certs/csr.conf` the way MicroK8s does (`openssl req` with
/// the config, then `x509 -req` with the CA and the `v3_ext` section), valid for `days`; the
/// certificate is written to `out`.
pub fn sign_server_cert_as_microk8s(certs: &Path, days: u32, out: &Path) {
    let tmp = tempfile::tempdir().unwrap();
    let csr = tmp.path().join("server.csr");
    let serial = tmp.path().join("ca.srl");
    let path = |p: &Path| p.to_str().unwrap().to_string();
    let (ok, text) = openssl(
        certs,
        &[
            "req",
            "-new",
            "-key",
            "server.key",
            "-config",
            "csr.conf",
            "-out",
            &path(&csr),
        ],
    );
    assert!(ok, "openssl req -config csr.conf: {text}");
    let (ok, text) = openssl(
        certs,
        &[
            "x509",
            "-req",
            "-sha256",
            "-in",
            &path(&csr),
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-CAserial",
            &path(&serial),
            "-out",
            &path(out),
            "-days",
            &days.to_string(),
            "-extensions",
            "v3_ext",
            "-extfile",
            "csr.conf",
        ],
    );
    assert!(ok, "openssl x509 -req -extfile csr.conf: {text}");
}

/// `openssl x509 -noout -text` of a cert.
pub fn x509_text(cert: &Path) -> String {
    let (ok, text) = openssl(
        cert.parent().unwrap(),
        &["x509", "-noout", "-text", "-in", cert.to_str().unwrap()],
    );
    assert!(ok, "{text}");
    text
}

/// One field of `openssl x509 -noout -<field>`, e.g. `serial`, `subject`.
pub fn x509_field(cert: &Path, field: &str) -> String {
    let flag = format!("-{field}");
    let (ok, text) = openssl(
        cert.parent().unwrap(),
        &[
            "x509",
            "-noout",
            &flag,
            "-nameopt",
            "RFC2253",
            "-in",
            cert.to_str().unwrap(),
        ],
    );
    assert!(ok, "{text}");
    text.trim().to_string()
}

/// Whether `openssl verify -CAfile ca cert` accepts `cert`.
pub fn verifies(certs: &Path, ca: &str, cert: &str) -> bool {
    let (ok, text) = openssl(certs, &["verify", "-CAfile", ca, cert]);
    ok && text.contains(": OK")
}

/// The host's addresses as `hostname -I` prints them, less link-local ones (as MicroK8s) and
/// those of the pod bridge and its veths, which are not the host's (mk8s leaves them out).
pub fn host_ips() -> Vec<String> {
    let out = Command::new("ip")
        .args(["-o", "addr", "show"])
        .output()
        .expect("ip -o addr show");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let dev = f.get(1)?.split('@').next()?;
            let ip = f.get(3)?.split('/').next()?;
            let skip = dev == "lo"
                || ["mk8sbr", "cni", "veth", "flannel", "vxlan", "cali"]
                    .iter()
                    .any(|p| dev.starts_with(p));
            (!skip).then(|| ip.to_string())
        })
        .filter(|ip| !ip.starts_with("169.254.") && !ip.to_ascii_lowercase().starts_with("fe80:"))
        .collect()
}

/// The leaf certificates signed by the cluster CA.
pub const CA_SIGNED: &[&str] = &[
    "server",
    "admin",
    "kubelet",
    "kubelet-server",
    "controller",
    "scheduler",
    "proxy",
    "dns",
    "apiserver-kubelet-client",
    "apiserver-etcd-client",
    "datastore",
];

/// Every kubeconfig bootstrap writes.
pub const KUBECONFIGS: &[&str] = &[
    "client.config",
    "kubelet.config",
    "controller.config",
    "scheduler.config",
    "proxy.config",
    "dns.config",
];

/// The SANs `openssl x509 -text` shows: DNS names as written, IPs normalised.
pub fn sans(cert: &Path) -> Vec<String> {
    let text = x509_text(cert);
    let mut lines = text.lines();
    let Some(_) = lines.find(|l| l.contains("Subject Alternative Name")) else {
        return Vec::new();
    };
    let list = lines.next().unwrap_or_default();
    list.split(',')
        .map(str::trim)
        .map(|item| match item.strip_prefix("IP Address:") {
            Some(ip) => normalize_ip(ip),
            None => item.strip_prefix("DNS:").unwrap_or(item).to_string(),
        })
        .collect()
}

/// An IP address in Rust's canonical text form.
pub fn normalize_ip(ip: &str) -> String {
    ip.parse::<std::net::IpAddr>()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| ip.to_string())
}
