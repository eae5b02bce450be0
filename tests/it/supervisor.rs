//! `mk8s start / status / stop` with the supervisor and the components that exist, on free
//! ports in a temporary data dir; every process started is stopped, by pid, even on failure.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::cluster::Cluster;
use crate::etcd::free_port;

fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z "))
}

fn wait_until(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn start_restart_after_kill_stop_and_resume() {
    let c = Cluster::new();
    let out = c.ok(&["start"]);
    assert!(
        out.contains("Started datastore") && out.ends_with("mk8s is running\n"),
        "{out}"
    );
    assert!(c.ok(&["start"]).contains("already running"));
    let status = c.ok(&["status", "--wait-ready", "--timeout", "30"]);
    assert!(
        status.starts_with("mk8s is running\nhigh-availability: no\n"),
        "{status}"
    );
    assert!(c.etcdctl(&["put", "survives", "stop"]).status.success());
    // The API server came up on the datastore: kubectl through mk8s sees its namespaces.
    let server = format!("--server=https://127.0.0.1:{}", c.api_port);
    let ns = c.kubectl(&[&server, "get", "namespaces", "-o", "name"]);
    assert!(
        String::from_utf8_lossy(&ns.stdout).contains("namespace/kube-system"),
        "{ns:?}"
    );

    // kill -9 of the component: the supervisor brings it back and status recovers.
    let first = c.pid("datastore").unwrap();
    Command::new("kill")
        .args(["-9", &first.to_string()])
        .status()
        .unwrap();
    wait_until("a new datastore", || {
        c.pid("datastore").is_some_and(|p| p != first)
    });
    let yaml = c.ok(&[
        "status",
        "--wait-ready",
        "--timeout",
        "30",
        "--format",
        "yaml",
    ]);
    assert!(
        yaml.contains("restarts: 1") && yaml.contains("state: running"),
        "{yaml}"
    );

    let supervisor = c.pid("supervisor").unwrap();
    let second = c.pid("datastore").unwrap();
    assert_eq!(c.ok(&["stop"]), "Stopped.\n");
    assert!(
        !alive(supervisor) && !alive(second),
        "stop must leave nothing running"
    );
    let out = c.mk8s(&["status"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "mk8s is not running\n"
    );
    assert_eq!(c.ok(&["stop"]), "mk8s is not running\n");

    c.ok(&["start"]);
    let got = c.etcdctl(&["get", "survives", "--print-value-only"]);
    assert_eq!(
        String::from_utf8_lossy(&got.stdout),
        "stop\n",
        "data is kept across stop/start"
    );
}

#[test]
fn a_killed_supervisor_leaves_nothing_running_twice() {
    let c = Cluster::new();
    c.ok(&["start"]);
    let supervisor = c.pid("supervisor").unwrap();
    let datastore = c.pid("datastore").unwrap();
    Command::new("kill")
        .args(["-9", &supervisor.to_string()])
        .status()
        .unwrap();
    // Its children get SIGTERM when it dies.
    wait_until("the orphaned datastore to exit", || !alive(datastore));
    c.ok(&["start"]);
    let again = c.pid("datastore").unwrap();
    assert_ne!(again, datastore);
    assert!(c.etcdctl(&["put", "k", "v"]).status.success());
}

/// What `packaging/mk8s.service` runs: a plain `mk8s supervise` in the foreground, the roots
/// from the environment, not its command line.
fn supervise_as_the_unit(c: &Cluster) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mk8s"));
    cmd.arg("supervise")
        .env("MK8S_SNAP_DATA", &c.data)
        .env("MK8S_SNAP_COMMON", &c.common)
        .stdin(Stdio::null());
    cmd
}

#[test]
fn the_units_supervisor_is_seen_and_stopped_by_the_cli() {
    let c = Cluster::new();
    let journal = tempfile::NamedTempFile::new().unwrap();
    // systemd's side of `Type=notify`: a datagram socket named by $NOTIFY_SOCKET.
    let notify_dir = tempfile::tempdir().unwrap();
    let notify_path = notify_dir.path().join("notify");
    let systemd = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    let mut unit = supervise_as_the_unit(&c)
        .env("NOTIFY_SOCKET", &notify_path)
        .stdout(journal.reopen().unwrap())
        .stderr(journal.reopen().unwrap())
        .spawn()
        .unwrap();
    // On its own it bootstraps and installs the args files, as `mk8s start` does.
    let deadline = Instant::now() + Duration::from_secs(120);
    while !c.mk8s(&["status"]).status.success() {
        if let Some(exit) = unit.try_wait().unwrap() {
            panic!(
                "mk8s supervise exited ({exit}): {}",
                std::fs::read_to_string(journal.path()).unwrap()
            );
        }
        assert!(Instant::now() < deadline, "the unit's supervisor never ran");
        std::thread::sleep(Duration::from_millis(200));
    }
    c.ok(&["status", "--wait-ready", "--timeout", "120"]);
    let journal_text = std::fs::read_to_string(journal.path()).unwrap();
    assert!(
        journal_text.contains("Created certificates and credentials"),
        "{journal_text}"
    );
    assert_eq!(c.pid("supervisor"), Some(unit.id()));
    systemd
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut buf = [0u8; 64];
    let n = systemd
        .recv(&mut buf)
        .expect("READY=1 once every component is up");
    assert_eq!(&buf[..n], b"READY=1\n");
    // Only the supervisor speaks for the unit: its components do not get the socket.
    let env = std::fs::read(format!("/proc/{}/environ", c.pid("containerd").unwrap())).unwrap();
    assert!(
        !String::from_utf8_lossy(&env).contains("NOTIFY_SOCKET="),
        "containerd must not tell systemd it is ready"
    );

    // `mk8s start` knows it by its lock, though its command line names no roots.
    assert_eq!(
        c.ok(&["start"]),
        format!("mk8s is already running (supervisor pid {})\n", unit.id())
    );
    // A second unit start is refused with the exit status the unit does not retry.
    let second = supervise_as_the_unit(&c).output().unwrap();
    assert_eq!(second.status.code(), Some(3), "{second:?}");
    assert!(
        String::from_utf8_lossy(&second.stderr).contains(&format!(
            "mk8s is already running (supervisor pid {})",
            unit.id()
        )),
        "{second:?}"
    );

    // `mk8s stop` stops it in order; it exits 0, so systemd leaves it stopped.
    let datastore = c.pid("datastore").unwrap();
    assert_eq!(c.ok(&["stop"]), "Stopped.\n");
    let deadline = Instant::now() + Duration::from_secs(30);
    let exit = loop {
        if let Some(exit) = unit.try_wait().unwrap() {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "the supervisor outlived `mk8s stop`"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(exit.success(), "{exit}");
    assert!(!alive(datastore));
}

#[test]
fn start_on_a_terminal_shows_a_spinner_and_the_same_steps() {
    let c = Cluster::new();
    let bin = env!("CARGO_BIN_EXE_mk8s");
    let line = format!(
        "{bin} start --data-dir {} --common-dir {}",
        c.data.display(),
        c.common.display()
    );
    // script(1) gives `start` a pseudo-terminal and copies what it draws to our pipe.
    let out = Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .env("TERM", "xterm")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        text.contains("Waiting for ") && text.contains("\x1b["),
        "a spinner on a terminal: {text:?}"
    );
    assert!(
        text.contains("Started datastore (") && text.contains("Started apiserver ("),
        "{text:?}"
    );
    // The spinner is cleared; the last line is the plain one.
    assert!(text.trim_end().ends_with("mk8s is running"), "{text:?}");
    assert!(c.mk8s(&["status"]).status.success());
}

#[test]
fn bad_args_and_taken_ports_are_clear_errors() {
    let c = Cluster::new();
    std::fs::write(
        c.data.join("args/datastore"),
        "--listen-client-urls=https://127.0.0.1:1\nnot-a-flag\n",
    )
    .unwrap();
    let out = c.mk8s(&["start"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("args/datastore:2: expected '--flag=value', found 'not-a-flag'"),
        "{err}"
    );
    assert!(c.pid("supervisor").is_none(), "nothing may start");

    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = holder.local_addr().unwrap().port();
    std::fs::write(
        c.data.join("args/datastore"),
        format!("--listen-client-urls=https://127.0.0.1:{port}\n--listen-peer-urls=https://127.0.0.1:{}\n", free_port()),
    )
    .unwrap();
    let out = c.mk8s(&["start"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{out:?}");
    assert!(
        err.contains(&format!("port {port} is already in use by"))
            && err.contains(&format!("(pid {})", std::process::id())),
        "{err}"
    );
}

#[test]
fn status_of_a_missing_data_dir_says_not_running() {
    let c = Cluster::new();
    let out = Command::new(env!("CARGO_BIN_EXE_mk8s"))
        .args([
            "status",
            "--data-dir",
            "/nonexistent/mk8s",
            "--common-dir",
            "/nonexistent/mk8s-common",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "mk8s is not running\n"
    );
    drop(c);
}

#[test]
fn kubectl_passes_arguments_and_exit_code_through() {
    let c = Cluster::new();
    c.ok(&["bootstrap"]);
    let out = c.kubectl(&["config", "current-context"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "mk8s\n");
    let bad = c.kubectl(&["config", "use-context", "nope"]);
    assert_eq!(bad.status.code(), Some(1), "kubectl's own exit code");
}

#[test]
fn reset_removes_every_object_and_keeps_running() {
    let c = Cluster::new();
    c.ok(&["start"]);
    assert!(c.etcdctl(&["put", "object", "1"]).status.success());
    // No terminal and no --yes: refuse, change nothing.
    let out = c.mk8s(&["reset"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refusing to reset without --yes"), "{err}");
    let got = c.etcdctl(&["get", "object", "--print-value-only"]);
    assert_eq!(String::from_utf8_lossy(&got.stdout), "1\n");

    // A new CA on a running cluster: the supervisor restarts whatever trusts or presents
    // certificates, and the admin's rewritten kubeconfig (new CA, new client cert) works.
    let out = c.ok(&["refresh-certs", "--cert", "ca.crt"]);
    for component in [
        "datastore",
        "apiserver",
        "controller-manager",
        "scheduler",
        "kubelet",
    ] {
        assert!(out.contains(&format!("Restarting {component}\n")), "{out}");
    }
    assert!(!out.contains("Restarting containerd"), "{out}");
    let got = c.kubectl(&["get", "ns", "default", "-o", "name"]);
    assert_eq!(
        String::from_utf8_lossy(&got.stdout),
        "namespace/default\n",
        "{got:?}"
    );
    let status = c.ok(&["status", "--wait-ready", "--timeout", "30"]);
    assert!(status.contains("mk8s is running"), "{status}");

    let ca = std::fs::read(c.data.join("certs/ca.crt")).unwrap();
    let out = c.ok(&["reset", "--yes"]);
    assert!(
        out.contains("Removed") && out.ends_with("mk8s is running\n"),
        "{out}"
    );
    let got = c.etcdctl(&["get", "object"]);
    assert!(got.status.success() && got.stdout.is_empty(), "{got:?}");
    assert_eq!(
        std::fs::read(c.data.join("certs/ca.crt")).unwrap(),
        ca,
        "certificates are kept"
    );
}

#[test]
fn completion_and_manpage_come_from_the_cli() {
    let c = Cluster::new();
    let bash = c.ok(&["completion", "bash"]);
    assert!(
        bash.contains("_mk8s()") && bash.contains("refresh-certs"),
        "{bash}"
    );
    for shell in ["zsh", "fish"] {
        assert!(c.ok(&["completion", shell]).contains("mk8s"));
    }
    let man = c.ok(&["manpage"]);
    assert!(man.starts_with(".ie") || man.contains(".TH mk8s"), "{man}");
    assert!(
        man.contains("refresh\\-certs") || man.contains("refresh-certs"),
        "{man}"
    );
}

fn tar_list(path: &std::path::Path) -> String {
    let out = Command::new("tar").arg("-tzf").arg(path).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn tar_read(path: &std::path::Path, member: &str) -> String {
    let out = Command::new("tar")
        .arg("-xzOf")
        .arg(path)
        .arg(member)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn inspect_collects_a_report_and_names_problems() {
    let c = Cluster::new();
    c.ok(&["start"]);
    let report = c.data.join("report.tar.gz");
    let out = c.ok(&["inspect", "--output", report.to_str().unwrap()]);
    assert!(out.starts_with("No problems found.\n"), "{out}");
    let list = tar_list(&report);
    for member in [
        "inspection-report/problems.txt",
        "inspection-report/versions.txt",
        "inspection-report/certificates.txt",
        "inspection-report/supervisor/status.json",
        "inspection-report/args/datastore",
        "inspection-report/logs/datastore.log",
        "inspection-report/logs/supervisor.log",
    ] {
        assert!(list.contains(member), "{member} missing from {list}");
    }
    let certs = tar_read(&report, "inspection-report/certificates.txt");
    assert!(
        certs.starts_with("The CA certificate will expire in 3649 days."),
        "{certs}"
    );
    // The node and pod summaries come from the running cluster, through kubectl.
    let nodes = tar_read(&report, "inspection-report/k8s/nodes.txt");
    assert!(
        nodes.starts_with("NAME ") && nodes.contains("containerd://"),
        "{nodes}"
    );
    let pods = tar_read(&report, "inspection-report/k8s/pods.txt");
    assert!(
        pods.starts_with("NAMESPACE ") || pods.starts_with("No resources found"),
        "{pods}"
    );

    // Stopped, with the datastore's port taken: the report says so and who holds it.
    c.ok(&["stop"]);
    let holder = std::net::TcpListener::bind(("127.0.0.1", c.client_port)).unwrap();
    let out = c.ok(&["inspect", "--output", report.to_str().unwrap()]);
    assert!(
        out.contains(&format!("port {} is already in use by", c.client_port)),
        "{out}"
    );
    let problems = tar_read(&report, "inspection-report/problems.txt");
    assert!(
        problems.contains(&format!("(pid {})", std::process::id())),
        "{problems}"
    );
    drop(holder);
}
