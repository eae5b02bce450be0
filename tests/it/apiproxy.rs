//! The API server's `services/proxy` and `pods/proxy` subresources, driven by real kubectl
//! (`get --raw`, `kubectl proxy`, `cluster-info`) against the end-to-end cluster's `web` pod
//! (busybox httpd on 8080 serving `hello-web`).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::cluster::Cluster;
use crate::etcd::free_port;
use crate::pods::{apply, kubectl};

/// A GET through `kubectl proxy` with curl (no redirects followed): status and body.
fn http_get(port: u16, path: &str) -> (String, String) {
    let out = Command::new("curl")
        .args(["-s", "-o", "-", "-w", "\n%{http_code}", "--max-time", "20"])
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.to_string(), body.to_string())
}

pub fn api_proxies_to_services_and_pods(c: &Cluster) {
    // A Service in front of the web pod; its endpoints come from the controller manager.
    apply(
        c,
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  selector: {app: web}\n  ports:\n  - {port: 80, targetPort: 8080}\n",
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (ok, out, _) = kubectl(
            c,
            &[
                "get",
                "endpoints",
                "web",
                "-o",
                "jsonpath={.subsets[0].addresses[0].ip}",
            ],
        );
        if ok && out.starts_with("10.1.") {
            break;
        }
        assert!(Instant::now() < deadline, "web has no endpoints");
        std::thread::sleep(Duration::from_millis(250));
    }

    // By port number, by no port (the only, unnamed one), and straight to the pod.
    for path in [
        "/api/v1/namespaces/default/services/web:80/proxy/",
        "/api/v1/namespaces/default/services/web/proxy/index.html",
        "/api/v1/namespaces/default/services/http:web:80/proxy/",
        "/api/v1/namespaces/default/pods/web:8080/proxy/",
    ] {
        let (ok, out, err) = kubectl(c, &["get", "--raw", path]);
        assert!(ok, "{path}: {err}");
        assert_eq!(out, "hello-web\n", "{path}");
    }
    // The backend's own 404 comes back as it was sent.
    let (ok, _, err) = kubectl(
        c,
        &[
            "get",
            "--raw",
            "/api/v1/namespaces/default/services/web:80/proxy/missing",
        ],
    );
    assert!(!ok && err.contains("NotFound"), "{err}");
    // Errors are upstream's Statuses.
    let (ok, _, err) = kubectl(
        c,
        &[
            "get",
            "--raw",
            "/api/v1/namespaces/default/services/web:81/proxy/",
        ],
    );
    assert!(!ok, "port 81 is not the service's");
    assert!(
        err.contains("no service port 81 found for service \\\"web\\\"")
            || err.contains("no service port 81 found for service \"web\""),
        "{err}"
    );
    let (ok, _, err) = kubectl(
        c,
        &[
            "get",
            "--raw",
            "/api/v1/namespaces/default/pods/web:8081/proxy/",
        ],
    );
    assert!(
        !ok && err.contains("error trying to reach service"),
        "{err}"
    );
    assert!(err.contains("connection refused"), "{err}");
    let (ok, _, err) = kubectl(
        c,
        &[
            "get",
            "--raw",
            "/api/v1/namespaces/default/services/ftp:web:80/proxy/",
        ],
    );
    assert!(!ok && err.contains("invalid service request"), "{err}");

    // `kubectl proxy` in front of the API server: the path users are told to curl.
    let port = free_port();
    let mut proxy = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(c.data.join("credentials/client.config"))
        .args(["proxy", &format!("--port={port}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(proxy.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.contains(&format!("127.0.0.1:{port}")), "{first}");
    let (status, body) = http_get(port, "/api/v1/namespaces/default/services/web/proxy/");
    let (status_nopath, _) = http_get(port, "/api/v1/namespaces/default/services/web/proxy");
    let _ = proxy.kill();
    let _ = proxy.wait();
    assert_eq!(status, "200", "{body}");
    assert_eq!(body, "hello-web\n");
    // No path: redirected to `…/proxy/`, as upstream.
    assert_eq!(status_nopath, "301");

    // cluster-info lists the control plane and the kube-system cluster services.
    let (ok, out, err) = kubectl(c, &["cluster-info"]);
    assert!(ok, "{err}");
    assert!(out.contains("Kubernetes control plane"), "{out}");
}
