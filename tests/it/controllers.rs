//! The controller manager (`mk8s daemon controller-manager`) against the API server on free
//! loopback ports, judged by the real kubectl and curl: `kube-root-ca.crt` and the `default`
//! service account in every namespace, namespaces emptied and finalized on delete, leader
//! election between two instances. Every process is killed by pid on drop.

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::apiserver::Api;
use crate::etcd::{Kind, free_port};

/// One controller-manager process on its own port, pointed at `api` with `--master`.
pub(crate) struct Kcm {
    port: u16,
    log: PathBuf,
    child: Option<Child>,
}

/// Whether a child of ours still runs (not exited, not a zombie awaiting its wait).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| !rest.starts_with('Z')))
        .unwrap_or(false)
}

impl Kcm {
    pub(crate) fn start(api: &Api, name: &str) -> Self {
        let data = &api.etcd.data.path;
        // The shipped defaults, as the supervisor installs them; ports come on the command line.
        let args = data.join("args/kube-controller-manager");
        if !args.exists() {
            std::fs::write(
                &args,
                include_str!("../../templates/args/kube-controller-manager"),
            )
            .unwrap();
        }
        let port = free_port();
        let log = data.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_mk8s"))
            .args(["daemon", "controller-manager", "--data-dir"])
            .arg(data)
            .arg("--common-dir")
            .arg(api.etcd.data.common())
            .arg(format!("--secure-port={port}"))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--master={}", api.server()))
            .env("MK8S_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        let mut kcm = Kcm {
            port,
            log,
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (code, body) = kcm.curl(api, None, "/healthz");
            if code == 200 {
                assert_eq!(body, "ok");
                return kcm;
            }
            if let Some(status) = kcm.exited() {
                panic!("{name} exited ({status}): {}", kcm.log());
            }
            assert!(
                Instant::now() < deadline,
                "{name} not healthy: {}",
                kcm.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The log for a failure message: whole if short, else its warnings and errors and its
    /// last lines (CI shows only the start and end of a long message).
    pub(crate) fn log(&self) -> String {
        let state = match self.child.as_ref().map(|c| c.id()) {
            Some(pid) if !alive(pid) => "[the process has exited]\n",
            _ => "",
        };
        let all = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = all.lines().collect();
        if lines.len() <= 60 {
            return format!("{state}{all}");
        }
        let bad: Vec<&str> = lines
            .iter()
            .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
            .copied()
            .collect();
        format!(
            "{state}[{} lines; warnings and errors (last 25):]\n{}\n[last 30 lines:]\n{}",
            lines.len(),
            bad[bad.len().saturating_sub(25)..].join("\n"),
            lines[lines.len() - 30..].join("\n")
        )
    }

    fn exited(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Waits for the process to end by itself; its exit status.
    fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(s) = self.exited() {
                self.child = None;
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "still running after {within:?}: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn terminate(&mut self) -> ExitStatus {
        let pid = self.child.as_ref().map(Child::id).unwrap();
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
        self.wait_exit(Duration::from_secs(15))
    }

    /// curl to this instance's port, server certificate verified against the cluster CA,
    /// presenting `certs/<cert>.crt` if given: (code, body).
    fn curl(&self, api: &Api, cert: Option<&str>, path: &str) -> (u16, String) {
        let certs = api.etcd.data.certs();
        let mut c = Command::new("curl");
        c.args([
            "-sS",
            "--max-time",
            "10",
            "-w",
            "\n%{http_code}",
            "--cacert",
        ])
        .arg(certs.join("ca.crt"));
        if let Some(name) = cert {
            c.arg("--cert")
                .arg(certs.join(format!("{name}.crt")))
                .arg("--key")
                .arg(certs.join(format!("{name}.key")));
        }
        c.arg(format!("https://127.0.0.1:{}{path}", self.port));
        let out = c.output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }
}

impl Drop for Kcm {
    /// SIGTERM first, so the lease is released and a successor takes over at once; SIGKILL
    /// if it has not exited within 10 s.
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while matches!(c.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Polls `check` until it holds or `within` passes.
pub(crate) fn eventually(within: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check() {
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub(crate) fn stdout(api: &Api, args: &[&str]) -> Option<String> {
    let out = api.kubectl(args);
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// kubectl's stdout, empty when it fails (for polling).
pub(crate) fn get(api: &Api, args: &[&str]) -> String {
    stdout(api, args).unwrap_or_default()
}

/// `kubectl get <what> -o jsonpath=<path>`.
pub(crate) fn jsonpath(api: &Api, what: &[&str], path: &str) -> String {
    let p = format!("jsonpath={path}");
    let mut args = vec!["get"];
    args.extend_from_slice(what);
    args.extend(["-o", p.as_str()]);
    get(api, &args)
}

fn holder(api: &Api) -> String {
    stdout(
        api,
        &[
            "get",
            "lease",
            "-n",
            "kube-system",
            "kube-controller-manager",
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ],
    )
    .unwrap_or_default()
}

/// The CA bundle published in `ns`, if any.
fn published_ca(api: &Api, ns: &str) -> Option<String> {
    stdout(
        api,
        &[
            "get",
            "configmap",
            "kube-root-ca.crt",
            "-n",
            ns,
            "-o",
            "jsonpath={.data.ca\\.crt}",
        ],
    )
}

fn has_default_sa(api: &Api, ns: &str) -> bool {
    stdout(
        api,
        &["get", "serviceaccount", "default", "-n", ns, "-o", "name"],
    )
    .is_some()
}

#[test]
fn controller_manager_publishes_ca_creates_service_accounts_and_deletes_namespaces() {
    let api = Api::start(Kind::Mk8s);
    let ca = String::from_utf8(api.etcd.data.read("certs/ca.crt")).unwrap();
    let mut first = Kcm::start(&api, "kcm1");
    eventually(Duration::from_secs(10), "the first instance leads", || {
        !holder(&api).is_empty()
    });
    let leader = holder(&api);
    assert!(
        leader.contains('_'),
        "holderIdentity is <hostname>_<uuid>: {leader}"
    );

    // The bootstrap namespaces get theirs at start.
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        eventually(Duration::from_secs(5), ns, || {
            published_ca(&api, ns).as_deref() == Some(ca.as_str()) && has_default_sa(&api, ns)
        });
    }

    // A new namespace: both within 2 s.
    api.k(&["create", "namespace", "t1"]);
    eventually(
        Duration::from_secs(2),
        "kube-root-ca.crt and default SA in t1",
        || published_ca(&api, "t1").as_deref() == Some(ca.as_str()) && has_default_sa(&api, "t1"),
    );
    let cm = api.k(&["get", "cm", "kube-root-ca.crt", "-n", "t1", "-o", "json"]);
    assert!(
        cm.contains("\"kubernetes.io/description\": \"Contains a CA bundle that can be used to verify the kube-apiserver"),
        "{cm}"
    );

    // Deleted: recreated; edited: restored; the service account likewise.
    api.k(&["delete", "configmap", "kube-root-ca.crt", "-n", "t1"]);
    eventually(Duration::from_secs(2), "kube-root-ca.crt recreated", || {
        published_ca(&api, "t1").as_deref() == Some(ca.as_str())
    });
    api.k(&[
        "patch",
        "configmap",
        "kube-root-ca.crt",
        "-n",
        "t1",
        "-p",
        r#"{"data":{"ca.crt":"junk"}}"#,
    ]);
    eventually(Duration::from_secs(2), "kube-root-ca.crt restored", || {
        published_ca(&api, "t1").as_deref() == Some(ca.as_str())
    });
    api.k(&["delete", "serviceaccount", "default", "-n", "t1"]);
    eventually(Duration::from_secs(2), "default SA recreated", || {
        has_default_sa(&api, "t1")
    });

    // Deleting a namespace with content: kubectl waits, and it is gone within seconds.
    api.k(&["create", "configmap", "x", "-n", "t1", "--from-literal=a=b"]);
    api.k(&[
        "create",
        "secret",
        "generic",
        "s",
        "-n",
        "t1",
        "--from-literal=a=b",
    ]);
    let started = Instant::now();
    api.k(&["delete", "namespace", "t1", "--timeout=20s"]);
    assert!(started.elapsed() < Duration::from_secs(10));
    let err = api.k_err(&["get", "namespace", "t1"]);
    assert!(err.contains("NotFound"), "{err}");

    // Content held by a finalizer: the namespace waits and says why, then goes.
    api.k(&["create", "namespace", "t2"]);
    api.apply(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: held\n  namespace: t2\n  finalizers: [example.com/keep]\n",
    );
    api.k(&["delete", "namespace", "t2", "--wait=false"]);
    let conditions = || {
        stdout(
            &api,
            &[
                "get",
                "namespace",
                "t2",
                "-o",
                "jsonpath={range .status.conditions[*]}{.type}={.status}:{.message}{\"\\n\"}{end}",
            ],
        )
        .unwrap_or_default()
    };
    eventually(Duration::from_secs(5), "t2 reports what remains", || {
        conditions().contains(
            "NamespaceFinalizersRemaining=True:Some finalizers are remaining: example.com/keep in 1 resource instances",
        )
    });
    let c = conditions();
    for line in [
        "NamespaceDeletionDiscoveryFailure=False:All resources successfully discovered",
        "NamespaceDeletionContentFailure=False:All content successfully deleted, may be waiting on finalization",
        "NamespaceContentRemaining=True:Some resources are remaining: configmaps. has 1 resource instances",
    ] {
        assert!(c.lines().any(|l| l == line), "{line} missing:\n{c}");
    }
    api.k(&[
        "patch",
        "configmap",
        "held",
        "-n",
        "t2",
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/metadata/finalizers"}]"#,
    ]);
    eventually(Duration::from_secs(15), "t2 deleted", || {
        stdout(&api, &["get", "namespace", "t2", "-o", "name"]).is_none()
    });

    // Health for anyone; metrics only for an authenticated, authorized caller.
    for p in ["/healthz", "/livez", "/readyz"] {
        assert_eq!(first.curl(&api, None, p), (200, "ok".into()), "{p}");
    }
    assert_eq!(first.curl(&api, None, "/metrics").0, 401);
    let (code, metrics) = first.curl(&api, Some("admin"), "/metrics");
    assert_eq!(code, 200, "{metrics}");
    for line in [
        "leader_election_master_status{name=\"kube-controller-manager\"} 1",
        "mk8s_namespaces_finalized_total 2",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line}:\n{metrics}");
    }
    assert!(metrics.contains("root_ca_cert_publisher_sync_total{code=\"200\"}"));

    // A second instance waits while the first holds the lease.
    let mut second = Kcm::start(&api, "kcm2");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(holder(&api), leader);
    let (_, m2) = second.curl(&api, Some("admin"), "/metrics");
    assert!(
        m2.contains("leader_election_master_status{name=\"kube-controller-manager\"} 0"),
        "{m2}"
    );
    // The first stops cleanly and hands over; the second leads and works.
    assert!(first.terminate().success(), "{}", first.log());
    eventually(Duration::from_secs(8), "the second instance leads", || {
        let h = holder(&api);
        !h.is_empty() && h != leader
    });
    api.k(&["create", "namespace", "t3"]);
    eventually(Duration::from_secs(3), "default SA in t3", || {
        has_default_sa(&api, "t3") && published_ca(&api, "t3").is_some()
    });

    // Someone else takes the lease: the leader cannot renew and exits non-zero.
    api.k(&[
        "patch",
        "lease",
        "kube-controller-manager",
        "-n",
        "kube-system",
        "--type=merge",
        "-p",
        r#"{"spec":{"holderIdentity":"intruder"}}"#,
    ]);
    let status = second.wait_exit(Duration::from_secs(20));
    assert!(!status.success(), "{status}");
    assert!(
        second.log().contains("leaderelection lost"),
        "{}",
        second.log()
    );
}

#[test]
fn controller_manager_rejects_unknown_flags_in_one_line() {
    let api_less = crate::util::DataDir::bootstrapped();
    for (flag, want) in [
        ("--bogus=1", "unknown flag '--bogus'"),
        ("--controllers=*,nope", "\"nope\" is not a known controller"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_mk8s"))
            .arg("--data-dir")
            .arg(&api_less.path)
            .arg("--common-dir")
            .arg(api_less.common())
            .args(["daemon", "controller-manager", flag])
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(want), "{err}");
    }
}
