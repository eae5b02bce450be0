//! Helpers to run an etcd-API server for tests: the mk8s datastore or Debian's real etcd 3.4,
//! both with the cluster's TLS, on free loopback ports; killed (by pid) on drop.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::util::DataDir;

/// A free loopback port. Handed out from a counter below the kernel's ephemeral range, so
/// tests running in parallel (and their outgoing connections) never get the same port
/// between one test's check and its server's bind; each is checked free first.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const LOW: u32 = 15_000;
    const SPAN: u32 = 15_000;
    let start = (std::process::id() * 7919) % SPAN;
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (LOW + (start + n) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Which server to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Mk8s,
    RealEtcd,
}

/// A running etcd-API server and the certs to reach it.
pub struct Server {
    pub kind: Kind,
    pub data: DataDir,
    pub client_port: u16,
    pub peer_port: u16,
    pub storage: PathBuf,
    child: Option<Child>,
    extra: Vec<String>,
}

impl Server {
    pub fn start(kind: Kind) -> Self {
        Self::start_with(kind, &[])
    }

    pub fn start_with(kind: Kind, extra: &[&str]) -> Self {
        let data = DataDir::bootstrapped();
        let storage = data.path.join("var/lib/datastore");
        let mut s = Server {
            kind,
            data,
            client_port: free_port(),
            peer_port: free_port(),
            storage,
            child: None,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        s.spawn();
        s
    }

    pub fn certs(&self) -> PathBuf {
        self.data.certs()
    }

    pub fn endpoint(&self) -> String {
        format!("https://127.0.0.1:{}", self.client_port)
    }

    pub fn peer_endpoint(&self) -> String {
        format!("https://127.0.0.1:{}", self.peer_port)
    }

    fn spawn(&mut self) {
        let certs = self.certs();
        let c = |f: &str| certs.join(f).display().to_string();
        let log =
            std::fs::File::create(self.data.path.join(format!("{:?}.log", self.kind))).unwrap();
        let mut cmd = match self.kind {
            Kind::Mk8s => {
                // Through args/datastore, as the supervisor and `mk8s dbctl` read it.
                let args = self.data.path.join("args");
                std::fs::create_dir_all(&args).unwrap();
                std::fs::write(
                    args.join("datastore"),
                    format!(
                        "# test ports\n--listen-client-urls={}\n--listen-peer-urls={}\n",
                        self.endpoint(),
                        self.peer_endpoint()
                    ),
                )
                .unwrap();
                let mut cmd = Command::new(env!("CARGO_BIN_EXE_mk8s"));
                cmd.args(["daemon", "datastore", "--data-dir"])
                    .arg(&self.data.path)
                    .arg("--common-dir")
                    .arg(self.data.common());
                cmd
            }
            Kind::RealEtcd => {
                let mut cmd = Command::new("etcd");
                let peer = self.peer_endpoint();
                cmd.arg("--name=test")
                    .arg(format!("--data-dir={}", self.storage.display()))
                    .arg(format!("--listen-client-urls={}", self.endpoint()))
                    .arg(format!("--advertise-client-urls={}", self.endpoint()))
                    .arg(format!("--listen-peer-urls={peer}"))
                    .arg(format!("--initial-advertise-peer-urls={peer}"))
                    .arg(format!("--initial-cluster=test={peer}"))
                    .arg(format!("--cert-file={}", c("datastore.crt")))
                    .arg(format!("--key-file={}", c("datastore.key")))
                    .arg(format!("--trusted-ca-file={}", c("ca.crt")))
                    .arg("--client-cert-auth")
                    .arg(format!("--peer-cert-file={}", c("datastore.crt")))
                    .arg(format!("--peer-key-file={}", c("datastore.key")))
                    .arg(format!("--peer-trusted-ca-file={}", c("ca.crt")))
                    .arg("--peer-client-cert-auth")
                    .arg("--logger=zap");
                cmd
            }
        };
        cmd.args(&self.extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .env_remove("MK8S_FAULT_INJECT");
        self.child = Some(cmd.spawn().expect("start the etcd-API server"));
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = self.etcdctl(&["endpoint", "health"]);
            if out.status.success() {
                return;
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("{:?} exited ({status}): {}", self.kind, self.log());
            }
            assert!(
                Instant::now() < deadline,
                "{:?} not ready: {}",
                self.kind,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data.path.join(format!("{:?}.log", self.kind)))
            .unwrap_or_default()
    }

    /// SIGKILL, as a crash.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// `etcdctl` against the client port with the apiserver's etcd client cert.
    pub fn etcdctl(&self, args: &[&str]) -> Output {
        self.etcdctl_at(&self.endpoint(), "apiserver-etcd-client", args)
    }

    pub fn etcdctl_at(&self, endpoint: &str, client: &str, args: &[&str]) -> Output {
        etcdctl_cmd(endpoint, &self.certs(), Some(client), args)
            .output()
            .expect("etcdctl must be installed")
    }

    /// Runs etcdctl and returns stdout, requiring success.
    pub fn ctl(&self, args: &[&str]) -> String {
        let out = self.etcdctl(args);
        assert!(
            out.status.success(),
            "{:?}: etcdctl {args:?}: {}",
            self.kind,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs etcdctl expecting failure; returns stderr.
    pub fn ctl_err(&self, args: &[&str]) -> String {
        let out = self.etcdctl(args);
        assert!(
            !out.status.success(),
            "{:?}: etcdctl {args:?} should fail",
            self.kind
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }
}

/// An etcdctl command with the CA of `certs` and, if given, the client pair `client`.
pub fn etcdctl_cmd(endpoint: &str, certs: &Path, client: Option<&str>, args: &[&str]) -> Command {
    let mut cmd = Command::new("etcdctl");
    cmd.env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .arg(format!("--cacert={}", certs.join("ca.crt").display()))
        .arg("--dial-timeout=3s")
        .arg("--command-timeout=10s");
    if let Some(c) = client {
        cmd.arg(format!(
            "--cert={}",
            certs.join(format!("{c}.crt")).display()
        ))
        .arg(format!(
            "--key={}",
            certs.join(format!("{c}.key")).display()
        ));
    }
    cmd.args(args).stdin(Stdio::piped());
    cmd
}

impl Server {
    /// An `etcd-client` connection with the API server's etcd client certificate.
    pub async fn client(&self) -> etcd_client::Client {
        let certs = self.certs();
        let read = |f: &str| std::fs::read(certs.join(f)).unwrap();
        let tls = etcd_client::TlsOptions::new()
            .ca_certificate(etcd_client::Certificate::from_pem(read("ca.crt")))
            .identity(etcd_client::Identity::from_pem(
                read("apiserver-etcd-client.crt"),
                read("apiserver-etcd-client.key"),
            ))
            .domain_name("localhost");
        let opts = etcd_client::ConnectOptions::new()
            .with_tls(tls)
            .with_connect_timeout(Duration::from_secs(3))
            .with_timeout(Duration::from_secs(10));
        etcd_client::Client::connect([self.endpoint()], Some(opts))
            .await
            .expect("connect")
    }

    /// `etcdctl put <key>` with a value of `len` bytes fed on stdin (too big for argv).
    pub fn put_stdin(&self, key: &str, len: usize) -> Output {
        use std::io::Write;
        let mut put = etcdctl_cmd(
            &self.endpoint(),
            &self.certs(),
            Some("apiserver-etcd-client"),
            &["put", key],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
        put.stdin
            .take()
            .unwrap()
            .write_all(&vec![b'v'; len])
            .unwrap();
        put.wait_with_output().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}
