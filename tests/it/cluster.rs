//! A whole mk8s cluster in temporary roots, started through `mk8s start` like a user's, on
//! free ports: every component's args file names its own ports and the kubeconfigs point at
//! this cluster's API server. `mk8s stop` (then SIGKILL by pid file) on drop.

use std::path::PathBuf;
use std::process::{Command, Output};

use crate::etcd::{etcdctl_cmd, free_port};

/// Every component the supervisor runs, for the kill-by-pid-file cleanup.
pub const COMPONENTS: &[&str] = &[
    "supervisor",
    "dns",
    "proxy",
    "kubelet",
    "scheduler",
    "controller-manager",
    "apiserver",
    "datastore",
    "containerd",
];

/// A cluster in temporary roots; `mk8s stop` (then SIGKILL by pid file) on drop.
pub struct Cluster {
    _tmp: tempfile::TempDir,
    pub data: PathBuf,
    pub common: PathBuf,
    pub client_port: u16,
    pub api_port: u16,
    /// The proxy's nftables table (`ip <table>`), this cluster's own.
    pub proxy_table: String,
    /// The proxy's `/healthz` port (on 127.0.0.1) and `/metrics` port.
    pub proxy_healthz_port: u16,
    pub proxy_metrics_port: u16,
}

impl Cluster {
    /// A cluster whose proxy programs nothing that could touch another cluster's traffic (see
    /// [`Cluster::build`]); its API server listens on 127.0.0.1 only.
    pub fn new() -> Self {
        Self::build(false)
    }

    /// The one cluster (under the end-to-end lock) whose pods use services: its proxy owns
    /// MicroK8s's service range and NodePorts on every local address, and its API server
    /// listens on all addresses, as pods reach it through the `kubernetes` service at the
    /// host's address.
    pub fn serving_pods() -> Self {
        Self::build(true)
    }

    /// Test clusters run side by side on one host and all allocate from 10.152.183.0/24, so
    /// at most one proxy may own that range: the others get a range nobody allocates from
    /// (their proxies skip every service, as it lies outside their range) and NodePorts only
    /// on a TEST-NET address no packet is ever sent to. Each proxy has a table of its own,
    /// so none ever deletes or rewrites another's.
    fn build(serving_pods: bool) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let common = tmp.path().join("common");
        let client_port = free_port();
        std::fs::create_dir_all(data.join("args")).unwrap();
        std::fs::write(
            data.join("args/datastore"),
            format!(
                "--listen-client-urls=https://127.0.0.1:{client_port}\n--listen-peer-urls=https://127.0.0.1:{}\n--storage-dir=${{SNAP_DATA}}/var/lib/datastore\n",
                free_port()
            ),
        )
        .unwrap();
        let template = include_str!("../../templates/args/kube-apiserver");
        let api_port = free_port();
        let bind = if serving_pods { "0.0.0.0" } else { "127.0.0.1" };
        std::fs::write(
            data.join("args/kube-apiserver"),
            format!(
                "{template}--secure-port={api_port}\n--bind-address={bind}\n--etcd-servers=https://127.0.0.1:{client_port}\n"
            ),
        )
        .unwrap();
        let template = include_str!("../../templates/args/kube-controller-manager");
        std::fs::write(
            data.join("args/kube-controller-manager"),
            format!(
                "{template}--secure-port={}\n--bind-address=127.0.0.1\n",
                free_port()
            ),
        )
        .unwrap();
        let template = include_str!("../../templates/args/kube-scheduler");
        std::fs::write(
            data.join("args/kube-scheduler"),
            format!(
                "{template}--secure-port={}\n--bind-address=127.0.0.1\n",
                free_port()
            ),
        )
        .unwrap();
        let template = include_str!("../../templates/args/kubelet");
        std::fs::write(
            data.join("args/kubelet"),
            format!(
                "{template}--port={}\n--read-only-port={}\n--healthz-port={}\n--address=127.0.0.1\n--sync-frequency=2s\n",
                free_port(),
                free_port(),
                free_port()
            ),
        )
        .unwrap();
        // Read once `mk8s enable dns` is run: every address, so tests ask on 127.0.0.1 (the
        // kube-dns endpoint is the node's address, for pods); upstream resolvers are a port
        // nothing listens on.
        let template = include_str!("../../templates/args/dns");
        std::fs::write(
            data.join("args/dns"),
            format!(
                "{template}--bind-address=0.0.0.0\n--port={}\n--upstream=127.0.0.1:{}\n",
                free_port(),
                free_port()
            ),
        )
        .unwrap();
        let template = include_str!("../../templates/containerd-template.toml");
        std::fs::write(
            data.join("args/containerd-template.toml"),
            template.replace("127.0.0.1:1338", &format!("127.0.0.1:{}", free_port())),
        )
        .unwrap();
        let template = include_str!("../../templates/args/kube-proxy");
        let proxy_table = format!("mk8s-test-{api_port}");
        let (proxy_healthz_port, proxy_metrics_port) = (free_port(), free_port());
        let scope = if serving_pods {
            ""
        } else {
            "--service-cluster-ip-range=10.152.254.0/24\n--nodeport-addresses=192.0.2.1/32\n"
        };
        std::fs::write(
            data.join("args/kube-proxy"),
            format!(
                "{template}--nftables-table={proxy_table}\n--healthz-bind-address=127.0.0.1:{proxy_healthz_port}\n--metrics-bind-address=127.0.0.1:{proxy_metrics_port}\n--nftables-sync-period=5s\n{scope}"
            ),
        )
        .unwrap();
        // Bootstrap renders the kubeconfigs for args/kube-apiserver's --secure-port.
        Cluster {
            _tmp: tmp,
            data,
            common,
            client_port,
            api_port,
            proxy_table,
            proxy_healthz_port,
            proxy_metrics_port,
        }
    }

    /// The real kubectl with the admin kubeconfig, at this cluster's API server.
    pub fn kubectl_at(&self, args: &[&str]) -> Output {
        Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(self.data.join("credentials/client.config"))
            .args(args)
            .env("HOME", self.common.as_os_str())
            .output()
            .unwrap()
    }

    pub fn mk8s(&self, args: &[&str]) -> Output {
        self.mk8s_with_env(args, &[])
    }

    /// [`Self::mk8s`] with these extra environment variables.
    pub fn mk8s_with_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_mk8s"))
            .args(args)
            .arg("--data-dir")
            .arg(&self.data)
            .arg("--common-dir")
            .arg(&self.common)
            .env_remove("MK8S_SNAP_DATA")
            .env_remove("MK8S_SNAP_COMMON")
            .envs(env.iter().copied())
            .output()
            .unwrap()
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.mk8s(args);
        assert!(out.status.success(), "mk8s {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `mk8s --data-dir … kubectl <args>`: the roots must come first, as kubectl takes the rest.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_mk8s"))
            .arg("--data-dir")
            .arg(&self.data)
            .arg("--common-dir")
            .arg(&self.common)
            .arg("kubectl")
            .args(args)
            .env("HOME", self.common.as_os_str())
            .output()
            .unwrap()
    }

    pub fn pid(&self, name: &str) -> Option<u32> {
        std::fs::read_to_string(self.common.join(format!("run/{name}.pid")))
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }

    pub fn etcdctl(&self, args: &[&str]) -> Output {
        etcdctl_cmd(
            &format!("https://127.0.0.1:{}", self.client_port),
            &self.data.join("certs"),
            Some("apiserver-etcd-client"),
            args,
        )
        .output()
        .unwrap()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.mk8s(&["stop"]);
        for name in COMPONENTS {
            if let Some(pid) = self.pid(name) {
                let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            }
        }
        // A proxy stopped cleanly has removed its table; one killed has not.
        let _ = Command::new("nft")
            .args(["delete", "table", "ip", &self.proxy_table])
            .stderr(std::process::Stdio::null())
            .status();
    }
}
