//! HTTPS and gRPC probes on the end-to-end cluster (`pods.rs` calls `https_and_grpc_probes`):
//! the kubelet's prober against servers this test runs on the host, so their health can be
//! switched: `openssl s_server` (a certificate the prober must not verify, as upstream) for an
//! `httpGet` probe with `scheme: HTTPS` and `host: 127.0.0.1`, and a tonic-health server for a
//! `grpc` probe of a host-network pod (its pod IP is the node's). Each probe first passes
//! (Ready), then fails in upstream's words once the server stops or turns NOT_SERVING.

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};

use crate::cluster::Cluster;
use crate::etcd::free_port;
use crate::pods::{apply, jsonpath, kubectl, pod, wait_for};

/// Kills the child on every exit path.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A gRPC health server on every address, stopped when dropped.
struct Health {
    reporter: tonic_health::server::HealthReporter,
    runtime: tokio::runtime::Runtime,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Health {
    fn start(port: u16) -> Health {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let (reporter, service) = tonic_health::server::health_reporter();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let addr = std::net::SocketAddr::from(([0, 0, 0, 0], port));
        runtime.spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_shutdown(addr, async {
                    let _ = stopped.await;
                })
                .await;
        });
        Health {
            reporter,
            runtime,
            stop: Some(stop),
        }
    }

    fn set(&self, status: tonic_health::ServingStatus) {
        self.runtime
            .block_on(self.reporter.set_service_status("", status));
    }
}

impl Drop for Health {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

fn ready(c: &Cluster, name: &str) -> String {
    jsonpath(
        c,
        &["pod", name],
        "{.status.conditions[?(@.type==\"Ready\")].status}",
    )
}

/// Waits for the pod's Ready condition to be `want`; on a timeout, says why with its events.
fn wait_ready(c: &Cluster, name: &str, want: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    while ready(c, name) != want {
        assert!(
            std::time::Instant::now() < deadline,
            "{name} never became Ready={want}; status: {}\nevents:\n{}",
            jsonpath(c, &["pod", name], "{.status}"),
            events(c, name)
        );
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
}

fn events(c: &Cluster, name: &str) -> String {
    let selector = format!("involvedObject.name={name}");
    kubectl(
        c,
        &[
            "get",
            "events",
            "--field-selector",
            &selector,
            "-o",
            "jsonpath={range .items[*]}{.reason}: {.message}{\"\\n\"}{end}",
        ],
    )
    .1
}

pub fn https_and_grpc_probes(c: &Cluster) {
    // HTTPS: a self-signed certificate for another name, which the prober must not verify
    // (upstream's prober skips verification).
    let (cert, key) = (c.common.join("probe.crt"), c.common.join("probe.key"));
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args([
            "-nodes",
            "-subj",
            "/CN=elsewhere.example",
            "-days",
            "1",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let https_port = free_port();
    let server = Command::new("openssl")
        .args(["s_server", "-quiet", "-www", "-accept"])
        .arg(format!("127.0.0.1:{https_port}"))
        .arg("-cert")
        .arg(&cert)
        .arg("-key")
        .arg(&key)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let server = Killed(server);
    wait_for("openssl s_server to listen", 20, || {
        TcpStream::connect(("127.0.0.1", https_port)).is_ok()
    });
    let grpc_port = free_port();
    let health = Health::start(grpc_port);
    apply(
        c,
        &pod(
            "https-probe",
            "Always",
            &format!(
                "  containers:\n  - name: c\n    image: busybox:1.35\n    command: [sleep, '3600']\n    readinessProbe: {{httpGet: {{host: 127.0.0.1, port: {https_port}, path: /, scheme: HTTPS}}, periodSeconds: 1, failureThreshold: 1}}\n"
            ),
        ),
    );
    apply(
        c,
        &pod(
            "grpc-probe",
            "Always",
            &format!(
                "  hostNetwork: true\n  containers:\n  - name: c\n    image: busybox:1.35\n    command: [sleep, '3600']\n    readinessProbe: {{grpc: {{port: {grpc_port}}}, periodSeconds: 1, failureThreshold: 1}}\n"
            ),
        ),
    );
    wait_ready(c, "https-probe", "True");
    wait_ready(c, "grpc-probe", "True");
    let host_ip = jsonpath(c, &["pod", "grpc-probe"], "{.status.hostIP}");
    assert_eq!(
        jsonpath(c, &["pod", "grpc-probe"], "{.status.podIP}"),
        host_ip,
        "a host-network pod has the node's address"
    );
    let node = jsonpath(c, &["pod", "grpc-probe"], "{.spec.nodeName}");
    let (ok, name, err) = kubectl(c, &["exec", "grpc-probe", "--", "hostname"]);
    assert!(ok, "{err}");
    assert_eq!(name.trim(), node, "and the node's name");

    drop(server);
    wait_ready(c, "https-probe", "False");
    let want = format!(
        "Unhealthy: Readiness probe failed: Get \"https://127.0.0.1:{https_port}/\": dial tcp 127.0.0.1:{https_port}: connect: connection refused"
    );
    wait_for("the HTTPS probe's event", 30, || {
        events(c, "https-probe").contains(&want)
    });

    health.set(tonic_health::ServingStatus::NotServing);
    wait_ready(c, "grpc-probe", "False");
    wait_for("the gRPC probe's event", 30, || {
        events(c, "grpc-probe").contains(
            "Unhealthy: Readiness probe failed: service unhealthy (responded with \"NOT_SERVING\")",
        )
    });
    drop(health);
    wait_for("the gRPC probe to fail to connect", 60, || {
        events(c, "grpc-probe").contains(&format!(
            "Readiness probe failed: error: failed to connect service at \"{host_ip}:{grpc_port}\""
        ))
    });

    let (ok, _, err) = kubectl(
        c,
        &["delete", "pod", "https-probe", "grpc-probe", "--wait=false"],
    );
    assert!(ok, "{err}");
}
