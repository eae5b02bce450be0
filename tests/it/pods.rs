//! Pods on the real containerd, runc and CNI plugins, driven by the real kubectl through a
//! whole cluster started with `mk8s start`: one cluster for every scenario (they share the
//! `mk8sbr0` bridge and its address range), torn down by `mk8s stop` even on failure.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::cluster::Cluster;

fn kubectl(c: &Cluster, args: &[&str]) -> (bool, String, String) {
    let out = c.kubectl_at(args);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn apply(c: &Cluster, yaml: &str) {
    let mut child = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(c.data.join("credentials/client.config"))
        .args(["apply", "-f", "-"])
        .env("HOME", c.common.as_os_str())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(yaml.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "apply: {out:?}\n{yaml}");
}

fn jsonpath(c: &Cluster, what: &[&str], path: &str) -> String {
    let mut args = vec!["get"];
    args.extend_from_slice(what);
    let expr = format!("jsonpath={path}");
    args.extend_from_slice(&["-o", &expr]);
    kubectl(c, &args).1
}

fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn node_name() -> String {
    let out = Command::new("hostname").output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .to_ascii_lowercase()
}

/// A pod bound to this node (there is no scheduler yet), restartPolicy and body given.
fn pod(name: &str, restart: &str, body: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels: {{app: {name}}}\nspec:\n  nodeName: {}\n  restartPolicy: {restart}\n  terminationGracePeriodSeconds: 5\n{body}",
        node_name()
    )
}

fn ctr(c: &Cluster, args: &[&str]) -> String {
    let out = Command::new("ctr")
        .arg("--address")
        .arg(c.common.join("run/containerd.sock"))
        .args(["--namespace", "k8s.io"])
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Processes whose command line mentions this cluster's roots (containerd's shims do).
fn processes_of(c: &Cluster) -> Vec<String> {
    let needle = c.common.display().to_string();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains(&needle) {
            out.push(format!("{}: {cmd}", e.file_name().to_string_lossy()));
        }
    }
    out
}

#[test]
fn pods_run_on_containerd_end_to_end() {
    let c = Cluster::new();
    let out = c.mk8s(&["start"]);
    assert!(out.status.success(), "start: {out:?}");
    let archive = c.common.join("busybox.tar");
    let built = Command::new("bash")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tools/busybox-image.sh"
        ))
        .arg(&archive)
        .output()
        .unwrap();
    assert!(built.status.success(), "{built:?}");
    let imported = c.ok(&["images", "import", &archive.display().to_string()]);
    assert!(
        imported.contains("docker.io/library/busybox:1.35"),
        "{imported}"
    );
    let listed = c.ok(&["images", "ls"]);
    assert!(listed.contains("mk8s.local/pause:3.10"), "{listed}");

    // The Node is registered, Ready, with the runtime's version, and its Lease renewed.
    let node = node_name();
    wait_for("the node to be Ready", 60, || {
        jsonpath(
            &c,
            &["node", &node],
            "{.status.conditions[?(@.type==\"Ready\")].status}",
        ) == "True"
    });
    let runtime = jsonpath(
        &c,
        &["node", &node],
        "{.status.nodeInfo.containerRuntimeVersion}",
    );
    assert!(runtime.starts_with("containerd://1."), "{runtime}");
    assert_eq!(
        jsonpath(&c, &["node", &node], "{.status.capacity.pods}"),
        "110"
    );
    let holder = jsonpath(
        &c,
        &["lease", "-n", "kube-node-lease", &node],
        "{.spec.holderIdentity}",
    );
    assert_eq!(holder, node);

    // kube-root-ca.crt and the default service account come from the controller manager.
    wait_for("kube-root-ca.crt in default", 30, || {
        kubectl(&c, &["get", "configmap", "kube-root-ca.crt"]).0
            && kubectl(&c, &["get", "serviceaccount", "default"]).0
    });

    // A web server, Ready through its readiness probe.
    apply(
        &c,
        &pod(
            "web",
            "Always",
            "  containers:\n  - name: web\n    image: busybox:1.35\n    command: [sh, -c, 'echo hello-web > /tmp/index.html; exec httpd -f -p 8080 -h /tmp']\n    readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1}\n",
        ),
    );
    let (ok, _, err) = kubectl(
        &c,
        &["wait", "--for=condition=Ready", "pod/web", "--timeout=60s"],
    );
    assert!(ok, "web never became Ready: {err}");
    let web_ip = jsonpath(&c, &["pod", "web"], "{.status.podIP}");
    assert!(web_ip.starts_with("10.1."), "{web_ip}");
    assert_eq!(jsonpath(&c, &["pod", "web"], "{.status.phase}"), "Running");

    // Pod to pod over the bridge; configMap, secret and service-account token volumes.
    assert!(
        kubectl(
            &c,
            &["create", "configmap", "cfg", "--from-literal=key=cm-value"]
        )
        .0
    );
    assert!(
        kubectl(
            &c,
            &[
                "create",
                "secret",
                "generic",
                "sec",
                "--from-literal=pw=s3cret"
            ]
        )
        .0
    );
    apply(
        &c,
        &pod(
            "client",
            "Never",
            &format!(
                "  containers:\n  - name: c\n    image: busybox:1.35\n    command: [sh, -c, 'busybox timeout 5 wget -qO- http://{web_ip}:8080/index.html && cat /cm/key /sec/pw && echo && cat /var/run/secrets/kubernetes.io/serviceaccount/namespace && echo && test -s /var/run/secrets/kubernetes.io/serviceaccount/token && grep -q CERTIFICATE /var/run/secrets/kubernetes.io/serviceaccount/ca.crt && echo token-ok && echo POD=$POD_NAME']\n    env: [{{name: POD_NAME, valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}}}]\n    volumeMounts: [{{name: cm, mountPath: /cm}}, {{name: sec, mountPath: /sec}}]\n  volumes:\n  - {{name: cm, configMap: {{name: cfg}}}}\n  - {{name: sec, secret: {{secretName: sec}}}}\n"
            ),
        ),
    );
    wait_for("client to finish", 60, || {
        let p = jsonpath(&c, &["pod", "client"], "{.status.phase}");
        p == "Succeeded" || p == "Failed"
    });
    let (_, logs, _) = kubectl(&c, &["logs", "client"]);
    assert_eq!(
        jsonpath(&c, &["pod", "client"], "{.status.phase}"),
        "Succeeded",
        "client failed: {logs}"
    );
    assert_eq!(
        logs,
        "hello-web\ncm-values3cret\ndefault\ntoken-ok\nPOD=client\n"
    );
    let (_, tail, _) = kubectl(&c, &["logs", "client", "--tail=1"]);
    assert_eq!(tail, "POD=client\n");
    let reason = jsonpath(
        &c,
        &["pod", "client"],
        "{.status.containerStatuses[0].state.terminated.reason}",
    );
    assert_eq!(reason, "Completed");

    // A liveness failure restarts the container; a crashing one backs off.
    apply(
        &c,
        &pod(
            "live",
            "Always",
            "  containers:\n  - name: c\n    image: busybox:1.35\n    command: [sh, -c, 'touch /tmp/ok; sleep 2; rm /tmp/ok; exec sleep 3600']\n    livenessProbe: {exec: {command: [cat, /tmp/ok]}, periodSeconds: 1, failureThreshold: 1}\n",
        ),
    );
    apply(
        &c,
        &pod(
            "crash",
            "Always",
            "  containers:\n  - name: c\n    image: busybox:1.35\n    command: [sh, -c, 'echo crashing; exit 3']\n",
        ),
    );
    apply(
        &c,
        &pod(
            "never",
            "Always",
            "  containers:\n  - name: c\n    image: nothere.example/none:1.0\n    imagePullPolicy: Never\n",
        ),
    );
    wait_for("live to be restarted by its liveness probe", 60, || {
        jsonpath(
            &c,
            &["pod", "live"],
            "{.status.containerStatuses[0].restartCount}",
        )
        .parse::<u32>()
        .is_ok_and(|n| n >= 1)
    });
    let (_, events, _) = kubectl(
        &c,
        &[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=live",
        ],
    );
    assert!(events.contains("Liveness probe failed"), "{events}");
    wait_for("crash to be in CrashLoopBackOff", 60, || {
        jsonpath(
            &c,
            &["pod", "crash"],
            "{.status.containerStatuses[0].state.waiting.reason}",
        ) == "CrashLoopBackOff"
    });
    let last = jsonpath(
        &c,
        &["pod", "crash"],
        "{.status.containerStatuses[0].lastState.terminated.exitCode}",
    );
    assert_eq!(last, "3");
    let (_, prev, _) = kubectl(&c, &["logs", "crash", "--previous"]);
    assert_eq!(prev, "crashing\n");
    wait_for("never to say ErrImageNeverPull", 30, || {
        jsonpath(
            &c,
            &["pod", "never"],
            "{.status.containerStatuses[0].state.waiting.reason}",
        ) == "ErrImageNeverPull"
    });
    let msg = jsonpath(
        &c,
        &["pod", "never"],
        "{.status.containerStatuses[0].state.waiting.message}",
    );
    assert_eq!(
        msg,
        "Container image \"nothere.example/none:1.0\" is not present with pull policy of Never"
    );

    hooks_claims_and_updates(&c);
    init_security_and_downward(&c);
    restarted_kubelet_adopts(&c);

    // Deleting a pod stops it within its grace period and leaves no container, netns or IP.
    let ip_file = c.common.join(format!("var/lib/cni/networks/mk8s/{web_ip}"));
    assert!(ip_file.exists(), "host-local holds {web_ip}");
    let web_uid = jsonpath(&c, &["pod", "web"], "{.metadata.uid}");
    let started = Instant::now();
    let (ok, _, err) = kubectl(&c, &["delete", "pod", "web"]);
    assert!(ok, "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    assert!(!kubectl(&c, &["get", "pod", "web"]).0);
    let containers = ctr(
        &c,
        &[
            "containers",
            "ls",
            &format!("labels.\"io.kubernetes.pod.uid\"=={web_uid}"),
        ],
    );
    assert_eq!(
        containers.lines().count(),
        1,
        "only the header: {containers}"
    );
    assert!(!ip_file.exists(), "{web_ip} released");
    assert!(
        !c.common
            .join(format!("var/lib/kubelet/pods/{web_uid}"))
            .exists()
    );

    // Stop takes every container down; nothing of this cluster keeps running.
    c.ok(&["stop"]);
    let left = processes_of(&c);
    assert!(left.is_empty(), "still running after stop: {left:#?}");
}

/// Lifecycle hooks, a claim bound to a hostPath volume, and a configMap update reaching a
/// running pod (the cluster's kubelet re-reads volumes every 2 s, `--sync-frequency`).
fn hooks_claims_and_updates(c: &Cluster) {
    let host = c.common.join("pv-data");
    std::fs::create_dir_all(&host).unwrap();
    let host_s = host.display().to_string();
    apply(
        c,
        &format!(
            "apiVersion: v1\nkind: PersistentVolume\nmetadata: {{name: pv1}}\nspec:\n  capacity: {{storage: 1Gi}}\n  accessModes: [ReadWriteOnce]\n  hostPath: {{path: {host_s}}}\n  claimRef: {{namespace: default, name: claim1}}\n---\napiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {{name: claim1}}\nspec:\n  accessModes: [ReadWriteOnce]\n  resources: {{requests: {{storage: 1Gi}}}}\n  volumeName: pv1\n"
        ),
    );
    assert!(
        kubectl(
            c,
            &["create", "configmap", "live-cfg", "--from-literal=v=one"]
        )
        .0
    );
    apply(
        c,
        &pod(
            "hooks",
            "Always",
            "  containers:\n  - name: c\n    image: busybox:1.35\n    command: [sh, -c, 'until [ -f /tmp/started ]; do sleep 1; done; cat /tmp/started; echo > /data/main-ran; while true; do cat /cfg/v; echo; sleep 1; done']\n    lifecycle:\n      postStart: {exec: {command: [sh, -c, 'echo post-start > /tmp/started']}}\n      preStop: {exec: {command: [sh, -c, 'echo pre-stop > /data/pre-stop']}}\n    volumeMounts: [{name: data, mountPath: /data}, {name: cfg, mountPath: /cfg}]\n  volumes:\n  - {name: data, persistentVolumeClaim: {claimName: claim1}}\n  - {name: cfg, configMap: {name: live-cfg}}\n",
        ),
    );
    let (ok, _, err) = kubectl(
        c,
        &[
            "wait",
            "--for=condition=Ready",
            "pod/hooks",
            "--timeout=60s",
        ],
    );
    assert!(ok, "hooks never became Ready: {err}");
    wait_for("the claim's directory to be written", 30, || {
        host.join("main-ran").exists()
    });
    wait_for("postStart's file to be read", 30, || {
        kubectl(c, &["logs", "hooks"]).1.starts_with("post-start\n")
    });
    assert!(
        kubectl(
            c,
            &[
                "patch",
                "configmap",
                "live-cfg",
                "-p",
                r#"{"data":{"v":"two"}}"#
            ]
        )
        .0
    );
    wait_for("the configMap update inside the pod", 60, || {
        kubectl(c, &["logs", "hooks", "--tail=1"]).1 == "two\n"
    });
    let (ok, _, err) = kubectl(c, &["delete", "pod", "hooks"]);
    assert!(ok, "{err}");
    assert_eq!(
        std::fs::read_to_string(host.join("pre-stop")).unwrap_or_default(),
        "pre-stop\n",
        "preStop ran before the container stopped"
    );
}

/// Init containers, security context, a memory emptyDir, the downward API and resource refs.
fn init_security_and_downward(c: &Cluster) {
    apply(
        c,
        &pod(
            "features",
            "Never",
            "  securityContext: {runAsUser: 1000, runAsGroup: 3000}\n  initContainers:\n  - name: init\n    image: busybox:1.35\n    command: [sh, -c, 'echo from-init > /work/init.txt']\n    volumeMounts: [{name: work, mountPath: /work}]\n  containers:\n  - name: c\n    image: busybox:1.35\n    command: [sh, -c, 'cat /work/init.txt; id -u; id -g; touch /ro-test 2>/dev/null || echo read-only; grep -c \" /cache tmpfs\" /proc/mounts; cat /pod/labels; echo; echo CPU=$CPU']\n    securityContext: {readOnlyRootFilesystem: true}\n    resources: {limits: {cpu: 500m, memory: 64Mi}}\n    env: [{name: CPU, valueFrom: {resourceFieldRef: {resource: limits.cpu, divisor: 1m}}}]\n    volumeMounts: [{name: work, mountPath: /work}, {name: cache, mountPath: /cache}, {name: pod, mountPath: /pod}]\n  volumes:\n  - {name: work, emptyDir: {}}\n  - {name: cache, emptyDir: {medium: Memory}}\n  - {name: pod, downwardAPI: {items: [{path: labels, fieldRef: {fieldPath: metadata.labels}}]}}\n",
        ),
    );
    wait_for("features to finish", 60, || {
        let p = jsonpath(c, &["pod", "features"], "{.status.phase}");
        p == "Succeeded" || p == "Failed"
    });
    let (_, logs, _) = kubectl(c, &["logs", "features"]);
    assert_eq!(
        logs,
        "from-init\n1000\n3000\nread-only\n1\napp=\"features\"\nCPU=500\n"
    );
    let init = jsonpath(
        c,
        &["pod", "features"],
        "{.status.initContainerStatuses[0].state.terminated.reason}",
    );
    assert_eq!(init, "Completed");
    // The init container has no limits, so the pod is Burstable, as upstream's QoS rules say.
    assert_eq!(
        jsonpath(c, &["pod", "features"], "{.status.qosClass}"),
        "Burstable"
    );
}

/// A kubelet killed with SIGKILL comes back (the supervisor restarts it) and adopts the
/// running containers instead of starting them again.
fn restarted_kubelet_adopts(c: &Cluster) {
    let before = jsonpath(
        c,
        &["pod", "web"],
        "{.status.containerStatuses[0].containerID}",
    );
    let pid = std::fs::read_to_string(c.common.join("run/kubelet.pid")).unwrap();
    let pid = pid.trim().to_string();
    assert!(
        Command::new("kill")
            .args(["-9", &pid])
            .status()
            .unwrap()
            .success()
    );
    wait_for("a new kubelet", 30, || {
        std::fs::read_to_string(c.common.join("run/kubelet.pid")).is_ok_and(|p| p.trim() != pid)
    });
    wait_for("the new kubelet's health", 30, || {
        c.mk8s(&["status", "--wait-ready", "--timeout", "1"])
            .status
            .success()
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        jsonpath(
            c,
            &["pod", "web"],
            "{.status.containerStatuses[0].containerID}"
        ),
        before,
        "the container was adopted, not restarted"
    );
    assert_eq!(
        jsonpath(
            c,
            &["pod", "web"],
            "{.status.containerStatuses[0].restartCount}"
        ),
        "0"
    );
    assert_eq!(jsonpath(c, &["pod", "web"], "{.status.phase}"), "Running");
}
