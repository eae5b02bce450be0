//! Pods on the real containerd, runc and CNI plugins, driven by the real kubectl through a
//! whole cluster started with `mk8s start`: one cluster for every scenario (they share the
//! `mk8sbr0` bridge and its address range), torn down by `mk8s stop` even on failure.
//! `kubectl exec`, `attach` and `port-forward` (and the Python client's exec and
//! port-forward) go through the API server, the kubelet and containerd's streaming server.
//! The cluster runs with `mk8s enable rbac` (RBAC and Node authorizers).

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::cluster::Cluster;

pub(crate) fn kubectl(c: &Cluster, args: &[&str]) -> (bool, String, String) {
    let out = c.kubectl_at(args);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The real kubectl with the admin kubeconfig, not yet run.
fn kubectl_cmd(c: &Cluster, args: &[&str]) -> Command {
    let mut cmd = Command::new("kubectl");
    cmd.arg("--kubeconfig")
        .arg(c.data.join("credentials/client.config"))
        .args(args)
        .env("HOME", c.common.as_os_str());
    cmd
}

/// kubectl with `input` on its stdin.
fn kubectl_stdin(c: &Cluster, args: &[&str], input: &str) -> Output {
    let mut child = kubectl_cmd(c, args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// A long-running kubectl (attach, port-forward): its first stdout line, checked by `check`
/// while it runs; then it is killed (by its pid) and reaped. Its stderr is in any failure.
fn first_line_then_kill(
    c: &Cluster,
    args: &[&str],
    check: impl FnOnce(&str) -> Result<(), String>,
) -> String {
    first_line_then_kill_with(c, args, &[], check).0
}

/// [`first_line_then_kill`] with extra environment variables; also returns kubectl's stderr.
fn first_line_then_kill_with(
    c: &Cluster,
    args: &[&str],
    env: &[(&str, &str)],
    check: impl FnOnce(&str) -> Result<(), String>,
) -> (String, String) {
    let mut child = kubectl_cmd(c, args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Kept open until kubectl is gone: a closed pipe would kill it at its next line
    // (port-forward prints one per connection).
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let checked = if line.is_empty() {
        Err("no output".to_string())
    } else {
        check(&line)
    };
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    drop(stdout);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if let Err(why) = checked {
        panic!("kubectl {args:?}: {why}; first line {line:?}; stderr: {stderr}");
    }
    (line, stderr)
}

/// kubectl (under `timeout`, so a session that never ends fails the test instead of hanging
/// it) with extra environment variables and `input` on its stdin, written from a thread so
/// that output can flow meanwhile.
fn kubectl_timed(c: &Cluster, args: &[&str], env: &[(&str, &str)], input: &[u8]) -> Output {
    let mut child = Command::new("timeout")
        .arg("60")
        .arg("kubectl")
        .arg("--kubeconfig")
        .arg(c.data.join("credentials/client.config"))
        .args(args)
        .env("HOME", c.common.as_os_str())
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert_ne!(
        out.status.code(),
        Some(124),
        "kubectl {args:?} never ended: {out:?}"
    );
    out
}

/// With `-v=6` kubectl logs every request's method, URL and answer: the `/sub` request was a
/// `method` answered `101 Switching Protocols`, and kubectl never tried the other way (GET is
/// WebSocket, POST is SPDY).
fn assert_streamed_over(stderr: &str, method: &str, sub: &str) {
    let other = if method == "GET" { "POST" } else { "GET" };
    let is = |l: &str, m: &str| l.contains(&format!("] {m} https://")) && l.contains(sub);
    assert!(
        stderr
            .lines()
            .any(|l| is(l, method) && l.contains(" 101 Switching Protocols ")),
        "no {method} {sub} switched protocols: {stderr}"
    );
    assert!(
        !stderr.lines().any(|l| is(l, other)),
        "kubectl also tried {other} {sub}: {stderr}"
    );
}

/// The SPDY fallback is kubectl's only way with these set.
const SPDY_ONLY: &[(&str, &str)] = &[
    ("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", "false"),
    ("KUBECTL_PORT_FORWARD_WEBSOCKETS", "false"),
];

pub(crate) fn apply(c: &Cluster, yaml: &str) {
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

pub(crate) fn jsonpath(c: &Cluster, what: &[&str], path: &str) -> String {
    let mut args = vec!["get"];
    args.extend_from_slice(what);
    let expr = format!("jsonpath={path}");
    args.extend_from_slice(&["-o", &expr]);
    kubectl(c, &args).1
}

pub(crate) fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
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

/// A pod for the scheduler to place, restartPolicy and body given.
pub(crate) fn pod(name: &str, restart: &str, body: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels: {{app: {name}}}\nspec:\n  restartPolicy: {restart}\n  terminationGracePeriodSeconds: 5\n{body}"
    )
}

pub(crate) fn ctr(c: &Cluster, args: &[&str]) -> String {
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
    let c = Cluster::serving_pods();
    let out = c.mk8s(&["start"]);
    assert!(out.status.success(), "start: {out:?}");
    // Everything below runs under RBAC and the Node authorizer, as a hardened cluster would:
    // each component must get by with its own identity's permissions.
    let out = c.ok(&["enable", "rbac"]);
    assert!(out.ends_with("rbac is enabled\n"), "{out}");
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
    if !ok {
        let (_, pods, _) = kubectl(&c, &["get", "pods", "-o", "yaml"]);
        let (_, events, _) = kubectl(&c, &["get", "events"]);
        let log = std::fs::read_to_string(c.common.join("var/log/kubelet.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        panic!(
            "web never became Ready: {err}\n{pods}\n{events}\nkubelet log (last lines first):\n{}",
            tail.join("\n")
        );
    }
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

    scheduler_places_and_explains(&c);
    deployment_runs_and_rolls(&c);
    crate::jobs::job_runs_on_the_node(&c);
    crate::services::endpoint_slice_lists_running_pods(&c);
    crate::proxy::services_route_traffic(&c);
    crate::sets::daemonset_runs_on_the_node(&c);
    hooks_claims_and_updates(&c);
    crate::probes::https_and_grpc_probes(&c);
    init_security_and_downward(&c);
    restarted_kubelet_adopts(&c);
    stats_summary(&c);
    crate::apiproxy::api_proxies_to_services_and_pods(&c);
    // Cluster DNS from pods: enabling it points the kubelet's resolv.conf at kube-dns.
    let out = c.ok(&["enable", "dns"]);
    assert!(out.ends_with("dns is enabled\n"), "{out}");
    crate::dns::dns_from_pods(&c);
    exec_attach_and_port_forward(&c);
    crate::pod_edges::host_port_oom_and_pull_backoff(&c);
    bad_input_keeps_the_rest_running(&c);

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
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let ours: Vec<&str> = mounts
        .lines()
        .filter(|l| l.contains(&c.common.display().to_string()))
        .collect();
    assert!(ours.is_empty(), "still mounted after stop: {ours:#?}");
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
    // Twice: a kubelet once stopped pods it found before its first list was complete.
    for _ in 0..2 {
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
    }
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

/// `kubectl exec`, `attach` and `port-forward`, and the Python client's exec and port-forward,
/// through the API server, the kubelet and containerd's streaming server (on `web`, serving
/// `hello-web` on 8080, and the completed `client`).
fn exec_attach_and_port_forward(c: &Cluster) {
    // exec: kubectl's WebSocket (v5) ends at the API server, which speaks SPDY to the kubelet
    // (containerd 1.6 knows no v5); output, exit codes and stdin all come through.
    let (ok, out, err) = kubectl(c, &["exec", "web", "--", "sh", "-c", "echo hi"]);
    assert!(ok, "{err}");
    assert_eq!(out, "hi\n");
    let o = c.kubectl_at(&["exec", "web", "--", "sh", "-c", "exit 3"]);
    assert_eq!(o.status.code(), Some(3), "{o:?}");
    assert_eq!(
        String::from_utf8_lossy(&o.stderr),
        "command terminated with exit code 3\n"
    );
    let o = kubectl_stdin(c, &["exec", "-i", "web", "--", "cat"], "input\n");
    assert!(o.status.success(), "{o:?}");
    assert_eq!(String::from_utf8_lossy(&o.stdout), "input\n");
    // The same over both paths, proven by kubectl's request log: WebSocket by default, SPDY
    // with the env switches. stdin ends by itself (v5's close signal becomes a SPDY FIN), and
    // 300 kB go through cat and back in many frames.
    let big: String = (1..=50_000).map(|i| format!("{i}\n")).collect();
    for (env, method) in [(&[][..], "GET"), (SPDY_ONLY, "POST")] {
        let o = kubectl_timed(
            c,
            &[
                "-v=6",
                "exec",
                "web",
                "--",
                "sh",
                "-c",
                "echo hi; echo oops >&2; exit 3",
            ],
            env,
            b"",
        );
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(3), "{o:?}");
        assert_eq!(String::from_utf8_lossy(&o.stdout), "hi\n");
        assert!(
            err.contains("\noops\n") || err.starts_with("oops\n"),
            "{err}"
        );
        assert!(
            err.contains("command terminated with exit code 3\n"),
            "{err}"
        );
        assert_streamed_over(&err, method, "/exec?");
        let o = kubectl_timed(
            c,
            &["-v=6", "exec", "-i", "web", "--", "cat"],
            env,
            big.as_bytes(),
        );
        assert!(
            o.status.success(),
            "{:?}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(o.stdout == big.as_bytes(), "{} bytes back", o.stdout.len());
        assert_streamed_over(&String::from_utf8_lossy(&o.stderr), method, "/exec?");
    }
    // -t under a pty (script from util-linux): the command gets a terminal (and the resize
    // stream its size), over WebSocket.
    let kubeconfig = c.data.join("credentials/client.config");
    let tty_log = c.common.join("exec-tty.log");
    let o = Command::new("script")
        .arg("-qec")
        .arg(format!(
            "kubectl --kubeconfig {} -v=6 exec -it web -- sh -c 'tty; stty size; echo ok' 2>{}",
            kubeconfig.display(),
            tty_log.display()
        ))
        .arg("/dev/null")
        .env("HOME", c.common.as_os_str())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    // (script may echo the end of its own empty stdin, as ^@ or ^D, anywhere in the output.)
    let tty = String::from_utf8_lossy(&o.stdout)
        .replace("^@", "")
        .replace("^D", "");
    assert!(o.status.success(), "{o:?}");
    assert!(
        tty.starts_with("/dev/pts/") && tty.contains("\r\nok\r\n"),
        "{tty:?}"
    );
    assert_streamed_over(&std::fs::read_to_string(&tty_log).unwrap(), "GET", "/exec?");
    // Errors: the API server's, and the completed pod kubectl itself refuses.
    let (ok, _, err) = kubectl(c, &["exec", "web", "-c", "nosuch", "--", "true"]);
    assert!(!ok);
    assert_eq!(
        err,
        "Error from server (BadRequest): container nosuch is not valid for pod web\n"
    );
    let (ok, _, err) = kubectl(c, &["exec", "client", "--", "true"]);
    assert!(!ok);
    assert_eq!(
        err,
        "error: cannot exec into a container in a completed pod; current phase is Succeeded\n"
    );
    // Asked anyway (SPDY, straight to the API): the kubelet finds no running container and
    // says so, relayed as it sent it.
    let certs = c.data.join("certs");
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20", "--http1.1", "-w", "\n%{http_code}"])
        .arg("--cacert")
        .arg(certs.join("ca.crt"))
        .arg("--cert")
        .arg(certs.join("admin.crt"))
        .arg("--key")
        .arg(certs.join("admin.key"))
        .args(["-X", "POST", "-H", "Connection: Upgrade", "-H", "Upgrade: SPDY/3.1"])
        .arg(format!(
            "https://127.0.0.1:{}/api/v1/namespaces/default/pods/client/exec?command=true&stdout=true",
            c.api_port
        ))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "container not found (\"c\")\n500"
    );

    // port-forward: a local port reaches the pod's 8080 until kubectl is killed; several
    // connections, one after another and at once, requests up and bodies (300 kB) down; over
    // the WebSocket tunnel by default and SPDY with the env switches.
    let (ok, _, err) = kubectl(
        c,
        &["exec", "web", "--", "sh", "-c", "seq 1 50000 > /tmp/big"],
    );
    assert!(ok, "{err}");
    for (env, method) in [(&[][..], "GET"), (SPDY_ONLY, "POST")] {
        let local = crate::etcd::free_port();
        let get = |path: &str| {
            Command::new("curl")
                .args(["-sS", "--max-time", "20"])
                .arg(format!("http://127.0.0.1:{local}/{path}"))
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        };
        let (forwarding, err) = first_line_then_kill_with(
            c,
            &["-v=6", "port-forward", "pod/web", &format!("{local}:8080")],
            env,
            |_| {
                for _ in 0..3 {
                    let out = get("index.html").wait_with_output().unwrap();
                    if out.stdout != b"hello-web\n" {
                        return Err(format!("curl: {out:?}"));
                    }
                }
                let at_once: Vec<_> = (0..3).map(|_| get("big")).collect();
                for child in at_once {
                    let out = child.wait_with_output().unwrap();
                    if out.stdout != big.as_bytes() {
                        return Err(format!(
                            "curl big: {} bytes, {:?}",
                            out.stdout.len(),
                            out.stderr
                        ));
                    }
                }
                Ok(())
            },
        );
        assert_eq!(
            forwarding,
            format!("Forwarding from 127.0.0.1:{local} -> 8080\n")
        );
        assert_streamed_over(&err, method, "/portforward");
    }

    // attach: what the container prints from then on.
    apply(
        c,
        &pod(
            "ticker",
            "Always",
            "  containers:\n  - name: c\n    image: busybox:1.35\n    command: [sh, -c, 'i=0; while true; do echo tick-$i; i=$((i+1)); sleep 1; done']\n",
        ),
    );
    let (ok, _, err) = kubectl(
        c,
        &[
            "wait",
            "--for=condition=Ready",
            "pod/ticker",
            "--timeout=60s",
        ],
    );
    assert!(ok, "ticker never became Ready: {err}");
    for (env, method) in [(&[][..], "GET"), (SPDY_ONLY, "POST")] {
        let (tick, err) =
            first_line_then_kill_with(c, &["-v=6", "attach", "ticker"], env, |_| Ok(()));
        assert!(tick.starts_with("tick-"), "{tick:?}");
        assert_streamed_over(&err, method, "/attach?");
    }

    // Raw WebSocket: a ping gets its pong. Bad input ends its own session only: an unknown
    // subprotocol gets the kubelet's (upstream's) 403; garbage WebSocket frames, and garbage SPDY inside the port-forward tunnel, end those
    // sessions; the API server and streaming go on.
    let out = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/python/ws_bad_input.py"
        ))
        .arg(c.api_port.to_string())
        .arg(certs.join("ca.crt"))
        .arg(certs.join("admin.crt"))
        .arg(certs.join("admin.key"))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "ping HTTP/1.1 101 Switching Protocols pong\n\
         unknown-subprotocol HTTP/1.1 403 Forbidden\n\
         garbage-websocket HTTP/1.1 101 Switching Protocols closed\n\
         garbage-spdy HTTP/1.1 101 Switching Protocols closed\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (ok, out, err) = kubectl(c, &["exec", "web", "--", "echo", "still-here"]);
    assert!(ok && out == "still-here\n", "{err}");

    // The Python client's exec speaks WebSocket v4.channel.k8s.io, translated to SPDY by the
    // API server as kubectl's v5. Its port-forward (WebSocket channels, ports in the query)
    // goes to containerd, which speaks it.
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/stream_test.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(&kubeconfig)
        .output()
        .expect("python3 with the kubernetes client");
    assert!(
        out.status.success() && out.stdout == b"ok\n",
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `/stats/summary` through the API server's `nodes/proxy`, in metrics-server's shape.
fn stats_summary(c: &Cluster) {
    let node = node_name();
    let (ok, out, err) = kubectl(
        c,
        &[
            "get",
            "--raw",
            &format!("/api/v1/nodes/{node}/proxy/stats/summary"),
        ],
    );
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["node"]["nodeName"], node.as_str());
    assert!(
        v["node"]["cpu"]["usageCoreNanoSeconds"]
            .as_u64()
            .unwrap_or(0)
            > 0,
        "{v}"
    );
    assert!(
        v["node"]["memory"]["workingSetBytes"].as_u64().unwrap_or(0) > 0,
        "{v}"
    );
    let web = v["pods"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["podRef"]["name"] == "web")
        .unwrap_or_else(|| panic!("web missing: {v}"));
    let container = &web["containers"][0];
    assert_eq!(container["name"], "web");
    assert!(
        container["memory"]["workingSetBytes"].as_u64().unwrap_or(0) > 0,
        "{web}"
    );
    assert!(
        container["cpu"]["usageCoreNanoSeconds"]
            .as_u64()
            .unwrap_or(0)
            > 0,
        "{web}"
    );
}

/// A volume naming a missing configMap waits with upstream's FailedMount words and starts
/// once it exists; a command that does not exist fails with containerd's StartError and backs
/// off; `logs -f` streams a running pod; the rest keeps running throughout.
fn bad_input_keeps_the_rest_running(c: &Cluster) {
    apply(
        c,
        &pod(
            "nocm",
            "Always",
            "  containers:\n  - name: c\n    image: busybox:1.35\n    command: [sh, -c, 'cat /cfg/k; echo; exec sleep 3600']\n    volumeMounts: [{name: v, mountPath: /cfg}]\n  volumes:\n  - {name: v, configMap: {name: absent}}\n",
        ),
    );
    apply(
        c,
        &pod(
            "nocmd",
            "Always",
            "  containers:\n  - name: c\n    image: busybox:1.35\n    command: [/no/such/binary]\n",
        ),
    );
    wait_for("FailedMount for the missing configMap", 30, || {
        kubectl(
            c,
            &[
                "get",
                "events",
                "--field-selector",
                "involvedObject.name=nocm",
            ],
        )
        .1
        .contains("MountVolume.SetUp failed for volume \"v\" : configmap \"absent\" not found")
    });
    assert_eq!(
        jsonpath(
            c,
            &["pod", "nocm"],
            "{.status.containerStatuses[0].state.waiting.reason}"
        ),
        "ContainerCreating"
    );
    assert!(
        kubectl(
            c,
            &["create", "configmap", "absent", "--from-literal=k=now-here"]
        )
        .0
    );
    let (ok, _, err) = kubectl(
        c,
        &["wait", "--for=condition=Ready", "pod/nocm", "--timeout=60s"],
    );
    assert!(ok, "nocm never started once its configMap existed: {err}");
    wait_for("nocm's output", 30, || {
        kubectl(c, &["logs", "nocm"]).1 == "now-here\n"
    });

    wait_for("nocmd to fail with StartError", 60, || {
        jsonpath(
            c,
            &["pod", "nocmd"],
            "{.status.containerStatuses[0].lastState.terminated.reason}",
        ) == "StartError"
    });
    let code = jsonpath(
        c,
        &["pod", "nocmd"],
        "{.status.containerStatuses[0].lastState.terminated.exitCode}",
    );
    assert_eq!(code, "128");

    let line = first_line_then_kill(c, &["logs", "-f", "ticker"], |l| {
        if l.starts_with("tick-") {
            Ok(())
        } else {
            Err("not a tick".into())
        }
    });
    assert!(line.starts_with("tick-"), "{line}");
    assert_eq!(jsonpath(c, &["pod", "web"], "{.status.phase}"), "Running");
}

/// The scheduler binds pods (with a `Scheduled` event), and a pod that fits nowhere stays
/// Pending with upstream's condition and `FailedScheduling` text, then runs once room is made.
fn scheduler_places_and_explains(c: &Cluster) {
    let node = node_name();
    let events = |name: &str, reason: &str| {
        kubectl(
            c,
            &[
                "get",
                "events",
                "--field-selector",
                &format!("involvedObject.name={name},reason={reason}"),
                "-o",
                "jsonpath={.items[*].message}",
            ],
        )
        .1
    };
    // web was placed by the scheduler.
    assert_eq!(jsonpath(c, &["pod", "web"], "{.spec.nodeName}"), node);
    assert_eq!(
        events("web", "Scheduled"),
        format!("Successfully assigned default/web to {node}")
    );
    apply(
        c,
        &pod(
            "greedy",
            "Never",
            "  containers:\n  - name: c\n    image: busybox:1.35\n    command: [sleep, '3600']\n    resources: {requests: {cpu: '1000'}}\n",
        ),
    );
    apply(
        c,
        &pod(
            "elsewhere",
            "Never",
            "  nodeSelector: {disk: ssd}\n  containers:\n  - name: c\n    image: busybox:1.35\n    command: [sleep, '3600']\n",
        ),
    );
    wait_for("greedy's FailedScheduling", 30, || {
        !events("greedy", "FailedScheduling").is_empty()
    });
    assert_eq!(
        events("greedy", "FailedScheduling"),
        "0/1 nodes are available: 1 Insufficient cpu. preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod.."
    );
    assert_eq!(
        jsonpath(c, &["pod", "greedy"], "{.status.phase}"),
        "Pending"
    );
    assert_eq!(
        jsonpath(
            c,
            &["pod", "greedy"],
            "{.status.conditions[?(@.type==\"PodScheduled\")].reason}"
        ),
        "Unschedulable"
    );
    wait_for("elsewhere's FailedScheduling", 30, || {
        !events("elsewhere", "FailedScheduling").is_empty()
    });
    assert_eq!(
        events("elsewhere", "FailedScheduling"),
        "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector. preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling.."
    );
    // Labelling the node is a cluster change: the pod is retried and runs.
    assert!(kubectl(c, &["label", "node", &node, "disk=ssd"]).0);
    wait_for("elsewhere to run after the node was labelled", 60, || {
        jsonpath(c, &["pod", "elsewhere"], "{.status.phase}") == "Running"
    });
    assert!(kubectl(c, &["label", "node", &node, "disk-"]).0);
    let (ok, _, err) = kubectl(
        c,
        &[
            "delete",
            "pod",
            "greedy",
            "elsewhere",
            "--grace-period=1",
            "--wait=true",
        ],
    );
    assert!(ok, "{err}");

    // Priority admission: a missing class is refused as upstream refuses it.
    let o = kubectl_stdin(
        c,
        &["create", "-f", "-", "--dry-run=server"],
        &pod(
            "classless",
            "Never",
            "  priorityClassName: nope\n  containers:\n  - name: c\n    image: busybox:1.35\n",
        ),
    );
    assert!(!o.status.success());
    assert_eq!(
        String::from_utf8_lossy(&o.stderr).trim(),
        "Error from server (Forbidden): error when creating \"STDIN\": pods \"classless\" is forbidden: no PriorityClass with name nope was found"
    );
    // Preemption: a low-priority pod holding most of the CPU makes way for a high one.
    let alloc = jsonpath(c, &["node", &node], "{.status.allocatable.cpu}");
    let milli = match alloc.strip_suffix('m') {
        Some(m) => m.parse::<u64>().unwrap(),
        None => alloc.parse::<u64>().unwrap() * 1000,
    };
    let want = format!("{}m", milli * 6 / 10);
    apply(
        c,
        "apiVersion: scheduling.k8s.io/v1\nkind: PriorityClass\nmetadata: {name: high}\nvalue: 1000\n",
    );
    let hungry = |name: &str, class: &str| {
        pod(
            name,
            "Never",
            &format!(
                "  {class}\n  containers:\n  - name: c\n    image: busybox:1.35\n    command: [sleep, '3600']\n    resources: {{requests: {{cpu: {want}}}}}\n"
            ),
        )
    };
    apply(c, &hungry("low", "enableServiceLinks: false"));
    wait_for("low to run", 60, || {
        jsonpath(c, &["pod", "low"], "{.status.phase}") == "Running"
    });
    apply(c, &hungry("high", "priorityClassName: high"));
    assert_eq!(jsonpath(c, &["pod", "high"], "{.spec.priority}"), "1000");
    wait_for("high to run in low's place", 90, || {
        jsonpath(c, &["pod", "high"], "{.status.phase}") == "Running"
    });
    assert!(!kubectl(c, &["get", "pod", "low"]).0, "low was preempted");
    let (ok, _, err) = kubectl(c, &["delete", "pod", "high", "--wait=true"]);
    assert!(ok, "{err}");
    assert!(kubectl(c, &["delete", "priorityclass", "high"]).0);
}

/// The issue's acceptance through every component: a Deployment's pods are created by the
/// replicaset controller, bound by the scheduler, run by the kubelet; a rollout replaces them;
/// deleting the Deployment removes its ReplicaSets and pods (garbage collector).
fn deployment_runs_and_rolls(c: &Cluster) {
    let (ok, _, err) = kubectl(
        c,
        &[
            "create",
            "deployment",
            "hello",
            "--image=busybox:1.35",
            "--replicas=3",
            "--",
            "httpd",
            "-f",
            "-p",
            "8081",
        ],
    );
    assert!(ok, "{err}");
    let (ok, out, err) = kubectl(
        c,
        &["rollout", "status", "deployment/hello", "--timeout=90s"],
    );
    assert!(ok, "{out}{err}");
    assert_eq!(
        jsonpath(c, &["deployment", "hello"], "{.status.availableReplicas}"),
        "3"
    );
    let (ok, _, err) = kubectl(c, &["set", "env", "deployment/hello", "ROLLED=1"]);
    assert!(ok, "{err}");
    let (ok, out, err) = kubectl(
        c,
        &["rollout", "status", "deployment/hello", "--timeout=90s"],
    );
    assert!(ok, "{out}{err}");
    let (_, rs, _) = kubectl(c, &["get", "rs", "-l", "app=hello", "-o", "name"]);
    assert_eq!(rs.lines().count(), 2, "{rs}");
    let (ok, _, err) = kubectl(c, &["delete", "deployment", "hello"]);
    assert!(ok, "{err}");
    wait_for("hello's pods and replica sets to go", 60, || {
        let (_, pods, _) = kubectl(c, &["get", "pods", "-l", "app=hello", "-o", "name"]);
        let (_, rs, _) = kubectl(c, &["get", "rs", "-l", "app=hello", "-o", "name"]);
        pods.trim().is_empty() && rs.trim().is_empty()
    });
}
