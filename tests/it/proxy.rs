//! The service proxy on the end-to-end cluster (`Cluster::serving_pods`, RBAC on): a
//! ClusterIP and NodePort Service in front of busybox httpd pods, reached from a pod, from the
//! host and at 127.0.0.1:<nodePort>; the `kubernetes` service from a pod with its
//! service-account token; a refused connection once the backend is scaled to 0; a hand-flushed
//! chain put right by the next sync; the service's rules gone after `kubectl delete svc`.
//! All traffic stays on this host: service addresses are DNATed or rejected by the table.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::cluster::Cluster;
use crate::pods::{apply, ctr, jsonpath, kubectl, pod, wait_for};

fn nft_table(c: &Cluster) -> String {
    let out = Command::new("nft")
        .args(["list", "table", "ip", &c.proxy_table])
        .output()
        .unwrap();
    assert!(out.status.success(), "nft list table: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One HTTP/1.0 GET over a plain socket: the status line's code and the body.
fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    let code = buf
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = buf.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    Ok((code, body.to_string()))
}

/// Runs `script` in a fresh busybox pod to completion; its logs.
fn run_in_pod(c: &Cluster, name: &str, script: &str) -> String {
    apply(
        c,
        &pod(
            name,
            "Never",
            &format!(
                "  containers:\n  - name: c\n    image: busybox:1.35\n    command: [sh, -c, {}]\n",
                serde_json::to_string(script).unwrap()
            ),
        ),
    );
    wait_for(&format!("{name} to finish"), 90, || {
        let p = jsonpath(c, &["pod", name], "{.status.phase}");
        p == "Succeeded" || p == "Failed"
    });
    let (_, logs, _) = kubectl(c, &["logs", name]);
    assert_eq!(
        jsonpath(c, &["pod", name], "{.status.phase}"),
        "Succeeded",
        "{name} failed: {logs}"
    );
    logs
}

pub fn services_route_traffic(c: &Cluster) {
    // Health and metrics, as upstream serves them.
    let health = SocketAddr::from(([127, 0, 0, 1], c.proxy_healthz_port));
    let (code, body) = http_get(health, "/healthz").unwrap();
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"lastUpdated\""), "{body}");
    let metrics = SocketAddr::from(([127, 0, 0, 1], c.proxy_metrics_port));
    let (code, body) = http_get(metrics, "/metrics").unwrap();
    assert_eq!(code, 200);
    assert!(
        body.contains("kubeproxy_sync_proxy_rules_duration_seconds_count"),
        "{body}"
    );

    apply(
        c,
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: proxied\nspec:\n  replicas: 2\n  selector: {matchLabels: {app: proxied}}\n  template:\n    metadata: {labels: {app: proxied}}\n    spec:\n      terminationGracePeriodSeconds: 1\n      containers:\n      - name: web\n        image: busybox:1.35\n        command: [sh, -c, 'hostname > /tmp/index.html; exec httpd -f -p 8080 -h /tmp']\n        readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1}\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: proxied\nspec:\n  type: NodePort\n  selector: {app: proxied}\n  ports:\n  - {name: http, port: 80, targetPort: 8080}\n",
    );
    let (ok, _, err) = kubectl(
        c,
        &["rollout", "status", "deployment/proxied", "--timeout=120s"],
    );
    assert!(ok, "{err}");
    let cluster_ip = jsonpath(c, &["svc", "proxied"], "{.spec.clusterIP}");
    let node_port: u16 = jsonpath(c, &["svc", "proxied"], "{.spec.ports[0].nodePort}")
        .parse()
        .unwrap();
    let backends: Vec<String> = jsonpath(
        c,
        &["pods", "-l", "app=proxied"],
        "{.items[*].metadata.name}",
    )
    .split_whitespace()
    .map(str::to_string)
    .collect();
    assert_eq!(backends.len(), 2, "{backends:?}");
    wait_for("the proxy to program both endpoints", 30, || {
        let t = nft_table(c);
        t.contains(&cluster_ip) && t.matches("default/proxied/tcp/http__").count() >= 2
    });

    // From a pod: the ClusterIP spreads over both backends (20 tries: all on one is 2^-19).
    let logs = run_in_pod(
        c,
        "svc-client",
        &format!(
            "for i in $(seq 20); do busybox timeout 5 wget -qO- http://{cluster_ip}/index.html || exit 1; done"
        ),
    );
    for b in &backends {
        assert!(logs.contains(b.as_str()), "{b} never answered: {logs}");
    }

    // From a pod's network namespace, the `kubernetes` service with the pod's own token and
    // ca.crt (busybox's wget can neither check a CA nor speak TLS with an ECDSA server, so
    // curl runs in the pod's namespace instead).
    apply(
        c,
        &pod(
            "api-client",
            "Always",
            "  containers:\n  - name: c\n    image: busybox:1.35\n    command: [sleep, '3600']\n",
        ),
    );
    let (ok, _, err) = kubectl(
        c,
        &[
            "wait",
            "--for=condition=Ready",
            "pod/api-client",
            "--timeout=60s",
        ],
    );
    assert!(ok, "{err}");
    let sa = "/var/run/secrets/kubernetes.io/serviceaccount";
    let (ok, token, err) = kubectl(
        c,
        &["exec", "api-client", "--", "cat", &format!("{sa}/token")],
    );
    assert!(ok, "{err}");
    let (ok, ca, err) = kubectl(
        c,
        &["exec", "api-client", "--", "cat", &format!("{sa}/ca.crt")],
    );
    assert!(ok, "{err}");
    let ca_file = c.common.join("api-client-ca.crt");
    std::fs::write(&ca_file, ca).unwrap();
    let out = in_pod_netns(c, "api-client")
        .args(["curl", "-sS", "--max-time", "10", "--cacert"])
        .arg(&ca_file)
        .args([
            "-H",
            &format!("Authorization: Bearer {}", token.trim()),
            "https://10.152.183.1/api",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("APIVersions") && text.contains("\"v1\""),
        "{out:?}"
    );

    // From the host: the ClusterIP and the NodePort on 127.0.0.1.
    let ip: std::net::Ipv4Addr = cluster_ip.parse().unwrap();
    let (code, body) = http_get(SocketAddr::from((ip, 80)), "/index.html").unwrap();
    assert_eq!(code, 200);
    assert!(backends.iter().any(|b| body.trim() == b), "{body}");
    let (code, body) =
        http_get(SocketAddr::from(([127, 0, 0, 1], node_port)), "/index.html").unwrap();
    assert_eq!(code, 200);
    assert!(backends.iter().any(|b| body.trim() == b), "{body}");

    // A hand-edited table is put right by the next full sync (every 5 s in tests).
    let flushed = Command::new("nft")
        .args(["flush", "chain", "ip", &c.proxy_table, "services"])
        .status()
        .unwrap();
    assert!(flushed.success());
    wait_for("the proxy to restore its rules", 30, || {
        http_get(SocketAddr::from((ip, 80)), "/index.html").is_ok_and(|(code, _)| code == 200)
    });

    // No endpoints: refused at once, from the host and from a pod, never left hanging.
    let (ok, _, err) = kubectl(c, &["scale", "deployment/proxied", "--replicas=0"]);
    assert!(ok, "{err}");
    wait_for("the service to have no endpoint in the table", 60, || {
        !nft_table(c).contains("default/proxied/tcp/http__")
    });
    let started = Instant::now();
    let err = TcpStream::connect_timeout(&SocketAddr::from((ip, 80)), Duration::from_secs(5))
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let err = TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], node_port)),
        Duration::from_secs(5),
    )
    .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
    let logs = run_in_pod(
        c,
        "svc-refused",
        &format!("busybox timeout 5 wget -qO- http://{cluster_ip}/ 2>&1; echo exit=$?"),
    );
    assert!(logs.contains("refused"), "{logs}");

    // Deleting the service deletes its rules.
    let (ok, _, err) = kubectl(c, &["delete", "svc", "proxied"]);
    assert!(ok, "{err}");
    wait_for("the service's rules to go", 30, || {
        let t = nft_table(c);
        !t.contains("default/proxied/")
    });
    for p in ["svc-client", "svc-refused", "api-client"] {
        kubectl(c, &["delete", "pod", p, "--wait=false"]);
    }
    kubectl(c, &["delete", "deployment", "proxied"]);
}

/// A command to run in a pod's network namespace (for tools busybox lacks, such as curl with
/// TLS): `nsenter` into its first container's task.
pub(crate) fn in_pod_netns(c: &Cluster, pod: &str) -> Command {
    let cid = jsonpath(
        c,
        &["pod", pod],
        "{.status.containerStatuses[0].containerID}",
    );
    let cid = cid.trim_start_matches("containerd://");
    let tasks = ctr(c, &["tasks", "ls"]);
    let pid = tasks
        .lines()
        .find(|l| l.starts_with(cid))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or_else(|| panic!("no task {cid}: {tasks}"))
        .to_string();
    let mut cmd = Command::new("nsenter");
    cmd.args(["-t", &pid, "-n"]);
    cmd
}
