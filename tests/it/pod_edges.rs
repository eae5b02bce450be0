//! Pod edge cases on the end-to-end cluster (`pods.rs` calls `host_port_oom_and_pull_backoff`):
//! a `hostPort` reachable on the host's loopback through the CNI portmap plugin and released
//! with its pod; a container over its memory limit ending `OOMKilled` (exit 137); and an image
//! pull that fails (a registry address on loopback where nothing listens, so no traffic leaves
//! the machine) with upstream's reasons, events and back-off, retried until the image appears.

use std::process::Command;

use crate::cluster::Cluster;
use crate::etcd::free_port;
use crate::pods::{apply, ctr, jsonpath, kubectl, pod, wait_for};

fn curl(port: u16) -> Option<String> {
    let out = Command::new("curl")
        .args(["-sS", "-m", "3"])
        .arg(format!("http://127.0.0.1:{port}/"))
        .output()
        .unwrap();
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The messages of the pod's events with this reason, oldest first, and their summed counts.
fn events(c: &Cluster, pod: &str, reason: &str) -> (Vec<String>, u64) {
    let selector = format!("involvedObject.name={pod},reason={reason}");
    let out = jsonpath(
        c,
        &["events", "--field-selector", &selector],
        "{range .items[*]}{.count}|{.message}{\"\\n\"}{end}",
    );
    let mut messages = Vec::new();
    let mut count = 0;
    for line in out.lines() {
        let (n, msg) = line.split_once('|').unwrap_or(("1", line));
        count += n.parse::<u64>().unwrap_or(1);
        messages.push(msg.to_string());
    }
    (messages, count)
}

pub(crate) fn host_port_oom_and_pull_backoff(c: &Cluster) {
    // hostPort: the pod's port on the host's loopback, gone with the pod.
    let port = free_port();
    apply(
        c,
        &pod(
            "hostport",
            "Always",
            &format!(
                "  containers:\n  - name: c\n    image: busybox:1.35\n    command: [sh, -c, 'mkdir -p /www && echo hostport-ok > /www/index.html && exec httpd -f -p 8080 -h /www']\n    ports: [{{containerPort: 8080, hostPort: {port}}}]\n"
            ),
        ),
    );
    wait_for("the hostPort answers", 60, || {
        curl(port).is_some_and(|b| b == "hostport-ok\n")
    });
    let (ok, _, err) = kubectl(c, &["delete", "pod", "hostport"]);
    assert!(ok, "{err}");
    wait_for("the hostPort released", 20, || curl(port).is_none());

    // A container over its memory limit is killed by the kernel: OOMKilled, exit 137.
    apply(
        c,
        &pod(
            "oom",
            "Never",
            "  containers:\n  - name: c\n    image: busybox:1.35\n    command: [sh, -c, 'x=$(head -c 200000000 /dev/zero | tr \"\\0\" a); echo survived']\n    resources: {limits: {memory: 20Mi}}\n",
        ),
    );
    wait_for("oom to fail", 90, || {
        jsonpath(c, &["pod", "oom"], "{.status.phase}") == "Failed"
    });
    assert_eq!(
        jsonpath(
            c,
            &["pod", "oom"],
            "{.status.containerStatuses[0].state.terminated.reason}/{.status.containerStatuses[0].state.terminated.exitCode}"
        ),
        "OOMKilled/137"
    );
    let (_, table, _) = kubectl(c, &["get", "pod", "oom", "--no-headers"]);
    assert!(table.contains(" OOMKilled "), "{table}");

    // A pull that fails: ErrImagePull, then ImagePullBackOff, retried after the back-off.
    let registry = format!("127.0.0.1:{}", free_port());
    let image = format!("{registry}/missing:1");
    apply(
        c,
        &pod(
            "pull",
            "Always",
            &format!(
                "  containers:\n  - name: c\n    image: {image}\n    command: [sleep, '3600']\n"
            ),
        ),
    );
    let waiting = |c: &Cluster| {
        jsonpath(
            c,
            &["pod", "pull"],
            "{.status.containerStatuses[0].state.waiting.reason}|{.status.containerStatuses[0].state.waiting.message}",
        )
    };
    wait_for("ImagePullBackOff", 60, || {
        waiting(c) == format!("ImagePullBackOff|Back-off pulling image \"{image}\"")
    });
    let (failed, _) = events(c, "pull", "Failed");
    let pull_failed = format!("Failed to pull image \"{image}\": rpc error: code = ");
    assert!(
        failed.iter().any(|m| m.starts_with(&pull_failed)
            && m.contains(&format!("{registry}: connect: connection refused"))),
        "{failed:?}"
    );
    assert!(
        failed.iter().any(|m| m == "Error: ErrImagePull"),
        "{failed:?}"
    );
    assert!(
        failed.iter().any(|m| m == "Error: ImagePullBackOff"),
        "{failed:?}"
    );
    let (pulling, first) = events(c, "pull", "Pulling");
    assert_eq!(pulling, [format!("Pulling image \"{image}\"")]);
    // Back-off is 10 s, then the pull is tried again (not stuck in back-off for good).
    wait_for("a second pull", 40, || {
        events(c, "pull", "Pulling").1 > first
    });
    // Once the image is there, the next attempt finds it and the pod runs.
    ctr(
        c,
        &["images", "tag", "docker.io/library/busybox:1.35", &image],
    );
    wait_for("pull to run once its image exists", 60, || {
        jsonpath(c, &["pod", "pull"], "{.status.phase}") == "Running"
    });
    let (ok, _, err) = kubectl(c, &["delete", "pod", "pull", "oom", "--wait=true"]);
    assert!(ok, "{err}");
    ctr(c, &["images", "rm", &image]);
}
