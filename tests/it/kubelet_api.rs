//! `kubectl logs` and `nodes/proxy` end to end: the real kubectl against `mk8s daemon
//! apiserver`, which dials the kubelet's HTTPS API on 127.0.0.1 with the bootstrap's
//! `apiserver-kubelet-client` certificate. The kubelet side is mk8s's own server code
//! (`src/kubelet/{logs,server}.rs`, compiled in here since the crate has no library) over a
//! fake pod source and CRI log files written by the test; curl checks its TLS directly.
//! `kubectl exec`/`attach` get as far as this fake allows (no containerd): the API server's
//! and the kubelet's refusals; `tests/it/pods.rs` runs them on a real cluster.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateWaiting, ContainerStatus, Pod, PodStatus,
};

use crate::apiserver::Api;
use crate::etcd::{Kind, free_port};

// Siblings, as in `src/kubelet/`, so the server's `super::logs` and `super::auth` resolve.
#[allow(dead_code)]
#[path = "../../src/common/component/auth.rs"]
mod auth;
#[allow(dead_code)]
#[path = "../../src/kubelet/logs.rs"]
mod logs;
#[allow(dead_code)]
#[path = "../../src/kubelet/server.rs"]
mod server;
#[allow(dead_code)]
#[path = "../../src/common/servingcert.rs"]
mod servingcert;

use server::{PodSource, ServerConfig};

/// The kubelet core as the servers see it: pods with statuses, and running flags.
#[derive(Default)]
struct FakeNode {
    pods: Mutex<Vec<Pod>>,
    running: Mutex<HashMap<String, bool>>,
}

impl PodSource for FakeNode {
    fn pods(&self) -> Vec<Pod> {
        self.pods.lock().unwrap().clone()
    }
    fn container_running(&self, ns: &str, pod: &str, container: &str) -> bool {
        let key = format!("{ns}/{pod}/{container}");
        self.running
            .lock()
            .unwrap()
            .get(&key)
            .copied()
            .unwrap_or(false)
    }
    /// No containerd here: exec, attach and port-forward get as far as asking for one.
    fn runtime(
        &self,
    ) -> Option<k8s_cri::v1::runtime_service_client::RuntimeServiceClient<tonic::transport::Channel>>
    {
        None
    }
}

impl FakeNode {
    fn set_running(&self, pod: &str, container: &str, running: bool) {
        self.running
            .lock()
            .unwrap()
            .insert(format!("default/{pod}/{container}"), running);
    }
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

fn post(api: &Api, path: &str, body: &serde_json::Value) -> serde_json::Value {
    let (code, out) = api.curl(&[
        path,
        "-X",
        "POST",
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        &body.to_string(),
    ]);
    assert_eq!(code, 201, "POST {path}: {out}");
    json(&out)
}

fn create_node(api: &Api, name: &str, addresses: serde_json::Value, port: u16) {
    post(
        api,
        "/api/v1/nodes",
        &serde_json::json!({
            "apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
            "status": {"addresses": addresses,
                       "daemonEndpoints": {"kubeletEndpoint": {"Port": port}}},
        }),
    );
}

/// Creates a pod through the API; the stored object (with its uid).
fn create_pod(api: &Api, name: &str, node: Option<&str>, containers: &[&str]) -> Pod {
    let mut spec = serde_json::json!({
        "containers": containers.iter()
            .map(|c| serde_json::json!({"name": c, "image": "busybox:1.36"}))
            .collect::<Vec<_>>(),
    });
    if let Some(n) = node {
        spec["nodeName"] = n.into();
    }
    let stored = post(
        api,
        "/api/v1/namespaces/default/pods",
        &serde_json::json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name}, "spec": spec}),
    );
    serde_json::from_value(stored).unwrap()
}

/// The pod as the kubelet reports it: every container in `state`.
fn with_status(mut pod: Pod, state: ContainerState) -> Pod {
    let statuses = pod
        .spec
        .as_ref()
        .unwrap()
        .containers
        .iter()
        .map(|c| ContainerStatus {
            name: c.name.clone(),
            state: Some(state.clone()),
            ..Default::default()
        })
        .collect();
    pod.status = Some(PodStatus {
        phase: Some("Running".into()),
        container_statuses: Some(statuses),
        ..Default::default()
    });
    pod
}

fn running_state() -> ContainerState {
    ContainerState {
        running: Some(ContainerStateRunning::default()),
        ..Default::default()
    }
}

/// Writes `<root>/default_<pod>_<uid>/<container>/0.log`.
fn write_log(root: &Path, pod: &Pod, container: &str, text: &str) -> std::path::PathBuf {
    let dir = root
        .join(format!(
            "default_{}_{}",
            pod.metadata.name.as_deref().unwrap(),
            pod.metadata.uid.as_deref().unwrap()
        ))
        .join(container);
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("0.log");
    std::fs::write(&file, text).unwrap();
    file
}

fn wait_listening(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "kubelet never listened on {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

const WEB_LOG: &str = "2024-05-01T10:00:00Z stdout F hello\n\
                       2024-05-01T10:00:01.5Z stderr P wor\n\
                       2024-05-01T10:00:01.6Z stderr F ld\n";

#[test]
fn kubectl_logs_reach_the_kubelet_through_the_api_server() {
    let api = Api::start(Kind::Mk8s);
    let certs = api.etcd.data.certs();
    let log_root = tempfile::tempdir().unwrap();
    let (port, read_only, healthz) = (free_port(), free_port(), free_port());
    let node = Arc::new(FakeNode::default());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let cfg = ServerConfig {
        address: Ipv4Addr::LOCALHOST.into(),
        port,
        read_only_port: read_only,
        healthz_bind_address: Ipv4Addr::LOCALHOST.into(),
        healthz_port: healthz,
        tls_cert_file: certs.join("kubelet-server.crt"),
        tls_private_key_file: certs.join("kubelet-server.key"),
        client_ca_file: certs.join("ca.crt"),
        pod_logs_dir: log_root.path().to_path_buf(),
        node_name: "n1".into(),
        accept_tokens: false,
    };
    let server = runtime.spawn(server::serve(cfg, node.clone(), Default::default()));
    wait_listening(port);

    // n1 is this host by address; n2 by hostname (both reached on 127.0.0.1). "gone" has a
    // kubelet port nothing listens on.
    create_node(
        &api,
        "n1",
        serde_json::json!([{"type": "InternalIP", "address": "127.0.0.1"}]),
        port,
    );
    let hostname = nix::unistd::gethostname()
        .unwrap()
        .into_string()
        .unwrap()
        .to_ascii_lowercase();
    create_node(
        &api,
        "n2",
        serde_json::json!([{"type": "Hostname", "address": hostname}]),
        port,
    );
    let dead_port = free_port();
    create_node(
        &api,
        "gone",
        serde_json::json!([{"type": "InternalIP", "address": "127.0.0.1"}]),
        dead_port,
    );
    let web = create_pod(&api, "web", Some("n1"), &["c"]);
    let two = create_pod(&api, "two", Some("n2"), &["a", "b"]);
    let waiting = create_pod(&api, "waiting", Some("n1"), &["c"]);
    create_pod(&api, "pending", None, &["c"]);
    create_pod(&api, "lost", Some("gone"), &["c"]);
    let web_log = write_log(log_root.path(), &web, "c", WEB_LOG);
    write_log(
        log_root.path(),
        &two,
        "a",
        "2024-05-01T10:00:00Z stdout F from a\n",
    );
    write_log(
        log_root.path(),
        &two,
        "b",
        "2024-05-01T10:00:00Z stdout F from b\n",
    );
    *node.pods.lock().unwrap() = vec![
        with_status(web, running_state()),
        with_status(two, running_state()),
        with_status(
            waiting,
            ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some("ContainerCreating".into()),
                    ..Default::default()
                }),
                ..Default::default()
            },
        ),
    ];
    for (p, c) in [("web", "c"), ("two", "a"), ("two", "b")] {
        node.set_running(p, c, true);
    }

    // Plain, tail, timestamps (partial records joined into one line).
    assert_eq!(api.k(&["logs", "web"]), "hello\nworld\n");
    assert_eq!(api.k(&["logs", "web", "--tail=1"]), "world\n");
    assert_eq!(
        api.k(&["logs", "web", "--timestamps"]),
        "2024-05-01T10:00:00.000000000Z hello\n2024-05-01T10:00:01.500000000Z world\n"
    );
    assert_eq!(api.k(&["logs", "pod/web", "--limit-bytes=8"]), "hello\nwo");
    assert_eq!(
        api.k(&["logs", "web", "--insecure-skip-tls-verify-backend"]),
        "hello\nworld\n"
    );

    // Several containers: kubectl picks the first itself; the server insists on a name.
    let out = api.kubectl(&["logs", "two"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "from a\n");
    assert!(
        stderr(&out).contains("Defaulted container \"a\" out of: a, b"),
        "{}",
        stderr(&out)
    );
    assert_eq!(api.k(&["logs", "two", "-c", "b"]), "from b\n");
    let out = api.kubectl(&["get", "--raw", "/api/v1/namespaces/default/pods/two/log"]);
    assert!(!out.status.success());
    assert_eq!(
        stderr(&out),
        "Error from server (BadRequest): a container name must be specified for pod two, choose one of: [a b]\n"
    );
    let out = api.kubectl(&[
        "get",
        "--raw",
        "/api/v1/namespaces/default/pods/two/log?container=nosuch",
    ]);
    assert_eq!(
        stderr(&out),
        "Error from server (BadRequest): container nosuch is not valid for pod two\n"
    );
    let (code, body) = api.curl(&["/api/v1/namespaces/default/pods/web/log?tailLines=-1"]);
    assert_eq!(code, 422, "{body}");

    // Errors from the API server and from the kubelet, as upstream words them.
    assert_eq!(
        stderr(&api.kubectl(&["logs", "nosuch"])),
        "error: error from server (NotFound): pods \"nosuch\" not found in namespace \"default\"\n"
    );
    assert_eq!(
        stderr(&api.kubectl(&["get", "--raw", "/api/v1/namespaces/default/pods/nosuch/log"])),
        "Error from server (NotFound): pods \"nosuch\" not found\n"
    );
    assert_eq!(
        stderr(&api.kubectl(&["logs", "waiting"])),
        "Error from server (BadRequest): container \"c\" in pod \"waiting\" is waiting to start: ContainerCreating\n"
    );
    let out = api.kubectl(&["logs", "pending"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "");
    let started = Instant::now();
    assert_eq!(
        stderr(&api.kubectl(&["logs", "lost"])),
        format!(
            "Error from server: Get \"https://127.0.0.1:{dead_port}/containerLogs/default/lost/c\": dial tcp 127.0.0.1:{dead_port}: connect: connection refused\n"
        )
    );
    assert!(started.elapsed() < Duration::from_secs(15));

    // nodes/proxy: the kubelet's own answers.
    let pods = json(&api.k(&["get", "--raw", "/api/v1/nodes/n1/proxy/pods"]));
    assert_eq!(pods["kind"], "PodList");
    assert_eq!(pods["items"].as_array().unwrap().len(), 3);
    assert_eq!(
        api.k(&["get", "--raw", "/api/v1/nodes/n2/proxy/healthz"]),
        "ok"
    );
    let metrics = api.k(&["get", "--raw", "/api/v1/nodes/n1/proxy/metrics"]);
    assert!(metrics.contains("kubelet_running_pods 2\n"), "{metrics}");
    let out = api.kubectl(&["get", "--raw", "/api/v1/nodes/n1/proxy/nosuch"]);
    assert!(stderr(&out).contains("(NotFound)"), "{}", stderr(&out));

    // exec, attach and port-forward: the API server's own refusals, then the kubelet's
    // (relayed as it sent them; with no containerd here the kubelet stops at the runtime).
    // kubectl tries WebSocket, is refused, and reports what its SPDY retry was told.
    create_pod(&api, "orphan", Some("n1"), &["c"]);
    let exec_err = |args: &[&str]| {
        let started = Instant::now();
        let out = api.kubectl(args);
        assert!(!out.status.success(), "{args:?}: {}", stdout(&out));
        assert!(started.elapsed() < Duration::from_secs(20), "{args:?}");
        stderr(&out)
    };
    assert_eq!(
        exec_err(&["exec", "nosuch", "--", "true"]),
        "Error from server (NotFound): pods \"nosuch\" not found\n"
    );
    assert_eq!(
        exec_err(&["exec", "two", "-c", "nosuch", "--", "true"]),
        "Error from server (BadRequest): container nosuch is not valid for pod two\n"
    );
    assert_eq!(
        exec_err(&["exec", "pending", "--", "true"]),
        "Error from server (BadRequest): pod pending does not have a host assigned\n"
    );
    assert_eq!(
        exec_err(&["exec", "lost", "--", "true"]),
        format!(
            "Error from server: error dialing backend: dial tcp 127.0.0.1:{dead_port}: connect: connection refused\n"
        )
    );
    assert_eq!(
        exec_err(&["exec", "orphan", "--", "true"]),
        "error: unable to upgrade connection: pod does not exist\n"
    );
    assert_eq!(
        exec_err(&["exec", "web", "--", "true"]),
        "error: unable to upgrade connection: no container runtime to stream from\n"
    );
    assert!(
        exec_err(&["attach", "web"]).ends_with(
            "error: unable to upgrade connection: no container runtime to stream from\n"
        )
    );
    // Not an upgrade: upstream's 400; an unsupported method: 405; discovery lists them.
    let (code, body) = api.curl(&[
        "/api/v1/namespaces/default/pods/web/exec?command=true&stdout=true",
        "-X",
        "POST",
    ]);
    assert_eq!(code, 400, "{body}");
    assert_eq!(json(&body)["message"], "Upgrade request required");
    let (code, _) = api.curl(&["/api/v1/namespaces/default/pods/web/exec", "-X", "PUT"]);
    assert_eq!(code, 405);
    let (code, body) = api.curl(&[
        "/api/v1/namespaces/default/pods/web/portforward?ports=x",
        "-X",
        "POST",
    ]);
    assert_eq!(code, 400, "{body}");
    let resources = json(&api.k(&["get", "--raw", "/api/v1"]));
    for (sub, kind) in [
        ("pods/exec", "PodExecOptions"),
        ("pods/attach", "PodAttachOptions"),
        ("pods/portforward", "PodPortForwardOptions"),
    ] {
        let r = resources["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == sub)
            .unwrap_or_else(|| panic!("{sub} in discovery"));
        assert_eq!(r["kind"], kind);
        assert_eq!(r["verbs"], serde_json::json!(["create", "get"]));
    }

    // Follow: lines appended later arrive; the stream ends when the container stops.
    let home = tempfile::tempdir().unwrap();
    let mut follower = Command::new("kubectl")
        .arg(format!(
            "--kubeconfig={}",
            api.etcd.data.file("credentials/client.config").display()
        ))
        .arg(format!("--server={}", api.server()))
        .args(["logs", "-f", "web", "--tail=1"])
        .env("HOME", home.path())
        .env_remove("KUBECONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(follower.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "world");
    {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&web_log)
            .unwrap();
        writeln!(f, "2024-05-01T10:00:02Z stdout F later").unwrap();
    }
    assert_eq!(lines.next().unwrap().unwrap(), "later");
    node.set_running("web", "c", false);
    assert!(lines.next().is_none(), "the follow should end");
    let status = follower.wait().unwrap();
    assert!(status.success());

    // The kubelet's TLS itself: the API server's client certificate gets in, no certificate
    // does not; the read-only port is GET only.
    let curl = |args: &[&str]| {
        Command::new("curl")
            .args([
                "-sS",
                "--max-time",
                "10",
                "-w",
                "\n%{http_code}",
                "--cacert",
            ])
            .arg(certs.join("ca.crt"))
            .args(args)
            .output()
            .unwrap()
    };
    let with_cert = curl(&[
        "--cert",
        &certs
            .join("apiserver-kubelet-client.crt")
            .display()
            .to_string(),
        "--key",
        &certs
            .join("apiserver-kubelet-client.key")
            .display()
            .to_string(),
        &format!("https://127.0.0.1:{port}/pods"),
    ]);
    assert!(stdout(&with_cert).ends_with("\n200"), "{with_cert:?}");
    let anonymous = curl(&[&format!("https://127.0.0.1:{port}/pods")]);
    assert!(!anonymous.status.success(), "{anonymous:?}");
    let post = curl(&["-X", "POST", &format!("http://127.0.0.1:{read_only}/pods")]);
    assert!(stdout(&post).ends_with("\n405"), "{post:?}");
    let hz = curl(&[&format!("http://127.0.0.1:{healthz}/healthz")]);
    assert_eq!(stdout(&hz), "ok\n200");
    let exec = curl(&[&format!(
        "http://127.0.0.1:{read_only}/exec/default/web/c?output=1"
    )]);
    assert_eq!(stdout(&exec), "Debug endpoints are disabled.\n\n405");

    server.abort();
}
