//! The API server (`mk8s daemon apiserver`) on a free port over the mk8s datastore and over
//! Debian's real etcd 3.4, driven by the real kubectl and curl; every process is killed by
//! pid on drop.

use std::io::Write;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::etcd::{Kind, Server, free_port};

/// An API server and the etcd-API server under it.
pub struct Api {
    pub etcd: Server,
    pub port: u16,
    child: Option<Child>,
    home: tempfile::TempDir,
}

impl Api {
    pub fn start(kind: Kind) -> Self {
        let etcd = Server::start(kind);
        let mut api = Api {
            etcd,
            port: free_port(),
            child: None,
            home: tempfile::tempdir().unwrap(),
        };
        let args = api.etcd.data.path.join("args");
        std::fs::create_dir_all(&args).unwrap();
        let template = include_str!("../../templates/args/kube-apiserver");
        std::fs::write(
            args.join("kube-apiserver"),
            format!(
                "{template}# test overrides\n--secure-port={}\n--bind-address=127.0.0.1\n--etcd-servers={}\n",
                api.port,
                api.etcd.endpoint()
            ),
        )
        .unwrap();
        api.spawn();
        api
    }

    fn log_path(&self) -> std::path::PathBuf {
        self.etcd.data.path.join("apiserver.log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_mk8s"))
            .args(["daemon", "apiserver", "--data-dir"])
            .arg(&self.etcd.data.path)
            .arg("--common-dir")
            .arg(self.etcd.data.common())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (code, _) = self.curl(&["/readyz"]);
            if code == 200 {
                return;
            }
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                panic!("apiserver exited ({status}): {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "apiserver not ready: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    pub fn server(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    fn kubectl_cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("kubectl");
        c.arg(format!(
            "--kubeconfig={}",
            self.etcd.data.file("credentials/client.config").display()
        ))
        .arg(format!("--server={}", self.server()))
        .args(args)
        .env("HOME", self.home.path())
        .env_remove("KUBECONFIG");
        c
    }

    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_cmd(args).output().unwrap()
    }

    /// kubectl as a bearer-token user only (no client certificate, which would win).
    pub fn kubectl_token(&self, token: &str, args: &[&str]) -> Output {
        Command::new("kubectl")
            .arg("--kubeconfig=/dev/null")
            .arg(format!("--server={}", self.server()))
            .arg(format!(
                "--certificate-authority={}",
                self.etcd.data.certs().join("ca.crt").display()
            ))
            .arg(format!("--token={token}"))
            .args(args)
            .env("HOME", self.home.path())
            .env_remove("KUBECONFIG")
            .output()
            .unwrap()
    }

    pub fn kubectl_stdin(&self, args: &[&str], stdin: &str) -> Output {
        let mut child = self
            .kubectl_cmd(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }

    /// kubectl must succeed; its stdout.
    pub fn k(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// kubectl must fail; its stderr.
    pub fn k_err(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            !out.status.success(),
            "kubectl {args:?} should fail: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    pub fn apply(&self, manifest: &str) -> String {
        let out = self.kubectl_stdin(&["apply", "-f", "-"], manifest);
        assert!(
            out.status.success(),
            "apply failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A ConfigMap through the API (a JSON POST, as most clients send).
    pub fn create_cm(&self, name: &str) {
        let (code, out) = self.curl(&[
            "/api/v1/namespaces/default/configmaps",
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            &format!(r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"{name}"}},"data":{{"k":"v"}}}}"#),
        ]);
        assert_eq!(code, 201, "{out}");
    }

    /// curl as the admin (client certificate) unless `extra` says otherwise: (code, body).
    pub fn curl(&self, args: &[&str]) -> (u16, String) {
        self.curl_as(true, args)
    }

    pub fn curl_as(&self, admin: bool, args: &[&str]) -> (u16, String) {
        self.curl_with(admin.then_some("admin"), args)
    }

    /// curl presenting `certs/<cert>.crt` (or no certificate).
    pub fn curl_with(&self, cert: Option<&str>, args: &[&str]) -> (u16, String) {
        let certs = self.etcd.data.certs();
        let mut c = Command::new("curl");
        c.args([
            "-sS",
            "--max-time",
            "20",
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
        let (path, rest) = args.split_first().unwrap();
        c.args(rest).arg(format!("{}{path}", self.server()));
        let out = c.output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        self.stop();
    }
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

/// The first whitespace-separated words of each line (a table's columns).
fn header(table: &str) -> Vec<String> {
    table
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

fn kubectl_crud(kind: Kind) {
    let api = Api::start(kind);

    // Version and discovery as kubectl sees them.
    let v = json(&api.k(&["version", "-o", "json"]));
    assert_eq!(v["serverVersion"]["minor"], "32", "{v}");
    let resources = api.k(&["api-resources"]);
    for r in [
        "configmaps",
        "deployments",
        "leases",
        "clusterroles",
        "endpointslices",
    ] {
        assert!(resources.contains(r), "{r} missing: {resources}");
    }
    let versions = api.k(&["api-versions"]);
    assert!(
        versions.contains("apps/v1") && versions.contains("v1\n"),
        "{versions}"
    );

    // Bootstrap objects.
    let ns = api.k(&["get", "namespaces"]);
    assert_eq!(header(&ns), ["NAME", "STATUS", "AGE"]);
    for n in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert!(
            ns.lines().any(|l| l.starts_with(n) && l.contains("Active")),
            "{ns}"
        );
    }
    let svc = json(&api.k(&["get", "service", "kubernetes", "-o", "json"]));
    assert_eq!(svc["spec"]["clusterIP"], "10.152.183.1");
    assert_eq!(svc["spec"]["ports"][0]["port"], 443);

    // create -f, then apply: unchanged twice, configured on change.
    let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app\n  namespace: default\ndata:\n  a: \"1\"\n";
    let out = api.kubectl_stdin(&["create", "-f", "-"], cm);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "configmap/app created\n"
    );
    let again = api.kubectl_stdin(&["create", "-f", "-"], cm);
    assert!(
        String::from_utf8_lossy(&again.stderr).contains(
            "Error from server (AlreadyExists): error when creating \"STDIN\": configmaps \"app\" already exists"
        ),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    api.k(&["delete", "configmap", "app"]);
    assert_eq!(api.apply(cm), "configmap/app created\n");
    let rv1 =
        json(&api.k(&["get", "cm", "app", "-o", "json"]))["metadata"]["resourceVersion"].clone();
    assert_eq!(api.apply(cm), "configmap/app unchanged\n");
    let rv2 =
        json(&api.k(&["get", "cm", "app", "-o", "json"]))["metadata"]["resourceVersion"].clone();
    assert_eq!(rv1, rv2, "a no-op apply must not write");
    assert_eq!(
        api.apply(&cm.replace("\"1\"", "\"2\"")),
        "configmap/app configured\n"
    );
    let got = json(&api.k(&["get", "cm", "app", "-o", "json"]));
    assert_eq!(got["data"]["a"], "2");
    assert!(got["metadata"]["uid"].as_str().unwrap().len() == 36);
    assert!(
        got["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
            .is_string()
    );

    // label / annotate / patch of every type / edit.
    assert_eq!(
        api.k(&["label", "cm", "app", "tier=web"]),
        "configmap/app labeled\n"
    );
    assert_eq!(
        api.k(&["annotate", "cm", "app", "note=hi"]),
        "configmap/app annotated\n"
    );
    api.k(&[
        "patch",
        "cm",
        "app",
        "--type=merge",
        "-p",
        r#"{"data":{"b":"x"}}"#,
    ]);
    api.k(&[
        "patch",
        "cm",
        "app",
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/data/b","value":"y"}]"#,
    ]);
    api.k(&["patch", "cm", "app", "-p", r#"{"data":{"c":"z"}}"#]);
    let editor = api.etcd.data.path.join("editor.sh");
    std::fs::write(
        &editor,
        "#!/bin/sh\nsed -i 's/tier: web/tier: edited/' \"$1\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&editor, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let out = api
        .kubectl_cmd(&["edit", "cm", "app"])
        .env("EDITOR", &editor)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = json(&api.k(&["get", "cm", "app", "-o", "json"]));
    assert_eq!(
        got["data"],
        serde_json::json!({"a": "2", "b": "y", "c": "z"})
    );
    assert_eq!(got["metadata"]["labels"]["tier"], "edited");
    assert_eq!(got["metadata"]["annotations"]["note"], "hi");
    let table = api.k(&["get", "cm", "-l", "tier=edited"]);
    assert_eq!(header(&table), ["NAME", "DATA", "AGE"]);
    assert!(table.lines().nth(1).unwrap().starts_with("app "), "{table}");
    assert!(table.contains(" 3 "), "{table}");
    let none = api.kubectl(&["get", "cm", "-l", "tier=none"]);
    assert!(none.status.success() && none.stdout.is_empty());
    assert_eq!(
        String::from_utf8_lossy(&none.stderr),
        "No resources found in default namespace.\n"
    );

    // Deployments: defaults, scale subresource, generation, wide columns.
    let deploy = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  selector:\n    matchLabels: {app: web}\n  template:\n    metadata:\n      labels: {app: web}\n    spec:\n      containers:\n      - name: c\n        image: busybox:1.36\n        ports:\n        - containerPort: 80\n";
    assert_eq!(api.apply(deploy), "deployment.apps/web created\n");
    assert_eq!(
        api.k(&["scale", "deployment", "web", "--replicas=3"]),
        "deployment.apps/web scaled\n"
    );
    let d = json(&api.k(&["get", "deploy", "web", "-o", "json"]));
    assert_eq!(d["spec"]["replicas"], 3);
    assert_eq!(d["metadata"]["generation"], 2);
    assert_eq!(d["spec"]["strategy"]["type"], "RollingUpdate");
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["ports"][0]["protocol"],
        "TCP"
    );
    assert_eq!(d["spec"]["template"]["spec"]["restartPolicy"], "Always");
    let wide = api.k(&["get", "deploy", "-o", "wide"]);
    assert_eq!(
        header(&wide),
        [
            "NAME",
            "READY",
            "UP-TO-DATE",
            "AVAILABLE",
            "AGE",
            "CONTAINERS",
            "IMAGES",
            "SELECTOR"
        ]
    );
    assert!(
        wide.contains("0/3") && wide.contains("busybox:1.36") && wide.contains("app=web"),
        "{wide}"
    );
    api.k(&["set", "image", "deployment/web", "c=busybox:1.37"]);
    let d = json(&api.k(&["get", "deploy", "web", "-o", "json"]));
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "busybox:1.37"
    );
    assert_eq!(d["spec"]["template"]["spec"]["containers"][0]["name"], "c");

    // Services: ClusterIP and NodePort allocation, 422 on a taken IP.
    api.k(&["create", "service", "nodeport", "np", "--tcp=80:8080"]);
    let np = json(&api.k(&["get", "svc", "np", "-o", "json"]));
    let ip = np["spec"]["clusterIP"].as_str().unwrap();
    assert!(
        ip.starts_with("10.152.183.") && ip != "10.152.183.1",
        "{ip}"
    );
    let port = np["spec"]["ports"][0]["nodePort"].as_i64().unwrap();
    assert!((30000..=32767).contains(&port), "{port}");
    let taken = format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: dup\nspec:\n  clusterIP: {ip}\n  ports:\n  - port: 80\n"
    );
    let out = api.kubectl_stdin(&["create", "-f", "-"], &taken);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("provided IP is already allocated"), "{err}");

    // Unknown fields: kubectl asks for strict validation; a raw client gets a warning and the
    // field is dropped, as upstream's decoding drops it.
    let typo = deploy.replace("  selector:", "  replica: 2\n  selector:");
    let out = api.kubectl_stdin(&["apply", "-f", "-"], &typo);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Deployment in version \"v1\" cannot be handled as a Deployment: strict decoding error: unknown field \"spec.replica\""),
        "{err}"
    );
    let out = api.kubectl_stdin(&["apply", "--validate=warn", "-f", "-"], &typo);
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unknown field \"spec.replica\""),
        "{out:?}"
    );
    let pods = api.k(&["explain", "pods"]);
    assert!(
        pods.starts_with("KIND:       Pod\nVERSION:    v1\n"),
        "{pods}"
    );
    let (code, v2) = api.curl(&["/openapi/v2"]);
    assert_eq!(code, 200);
    let v2 = json(&v2);
    assert_eq!(v2["swagger"], "2.0");
    assert!(v2["definitions"]["io.k8s.api.apps.v1.Deployment"]["properties"]["spec"].is_object());
    let (code, _) = api.curl(&[
        "/openapi/v2",
        "-H",
        "Accept: application/com.github.proto-openapi.spec.v2@v1.0+protobuf",
    ]);
    assert_eq!(code, 404, "protobuf OpenAPI v2 is not served");
    let explain = api.k(&["explain", "deployment.spec.strategy"]);
    assert!(
        explain.contains("KIND:       Deployment") && explain.contains("rollingUpdate"),
        "{explain}"
    );

    // kubectl's typed clients send protobuf bodies.
    assert_eq!(
        api.k(&["create", "namespace", "team"]),
        "namespace/team created\n"
    );
    assert_eq!(
        api.k(&[
            "create",
            "configmap",
            "gen",
            "--from-literal=k=v",
            "-n",
            "team"
        ]),
        "configmap/gen created\n"
    );
    assert_eq!(
        api.k(&["get", "cm", "gen", "-n", "team", "-o", "jsonpath={.data.k}"]),
        "v"
    );
    api.k(&[
        "create",
        "secret",
        "generic",
        "s",
        "--from-literal=p=q",
        "-n",
        "team",
    ]);
    assert_eq!(
        api.k(&[
            "get",
            "secret",
            "s",
            "-n",
            "team",
            "-o",
            "jsonpath={.data.p}"
        ]),
        "cQ=="
    );
    api.k(&[
        "create",
        "deployment",
        "gen",
        "--image=busybox:1.36",
        "--replicas=2",
        "-n",
        "team",
    ]);
    let d = json(&api.k(&["get", "deploy", "gen", "-n", "team", "-o", "json"]));
    assert_eq!(d["spec"]["replicas"], 2);
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "busybox:1.36"
    );
    assert_eq!(d["spec"]["selector"]["matchLabels"]["app"], "gen");
    api.k(&[
        "create",
        "service",
        "clusterip",
        "gen",
        "--tcp=80:8080",
        "-n",
        "team",
    ]);
    assert_eq!(
        api.k(&["create", "job", "j", "--image=busybox:1.36", "-n", "team"]),
        "job.batch/j created\n"
    );
    let job = json(&api.k(&["get", "job", "j", "-n", "team", "-o", "json"]));
    let uid = job["metadata"]["uid"].as_str().unwrap();
    assert_eq!(
        job["spec"]["selector"]["matchLabels"]["batch.kubernetes.io/controller-uid"],
        uid
    );
    assert_eq!(
        job["spec"]["template"]["metadata"]["labels"]["job-name"],
        "j"
    );
    assert_eq!(job["spec"]["backoffLimit"], 6);
    api.k(&[
        "create",
        "cronjob",
        "cj",
        "--image=busybox:1.36",
        "--schedule=*/5 * * * *",
        "-n",
        "team",
    ]);
    assert_eq!(api.k(&["auth", "can-i", "create", "pods"]), "yes\n");
    let who = json(&api.k(&["auth", "whoami", "-o", "json"]));
    assert_eq!(who["status"]["userInfo"]["username"], "admin");
    assert!(
        who["status"]["userInfo"]["groups"]
            .as_array()
            .unwrap()
            .contains(&"system:masters".into())
    );

    // Delete and NotFound as upstream words it.
    assert_eq!(
        api.k(&["delete", "cm", "app"]),
        "configmap \"app\" deleted\n"
    );
    assert!(
        api.k_err(&["get", "cm", "app"])
            .contains("Error from server (NotFound): configmaps \"app\" not found")
    );
    assert!(
        api.k_err(&["get", "deploy", "nosuch"])
            .contains("deployments.apps \"nosuch\" not found")
    );
    assert!(
        api.k_err(&["get", "nosuchkind"])
            .contains("the server doesn't have a resource type \"nosuchkind\"")
    );
}

fn paging_watch_and_expired_versions(kind: Kind) {
    let api = Api::start(kind);
    for i in 0..25 {
        api.create_cm(&format!("cm-{i:02}"));
    }
    let page = json(
        &api.curl(&["/api/v1/namespaces/default/configmaps?limit=10"])
            .1,
    );
    assert_eq!(page["items"].as_array().unwrap().len(), 10);
    assert!(page["metadata"]["continue"].is_string(), "{page}");
    assert_eq!(page["metadata"]["remainingItemCount"], 15, "{page}");
    let all = api.k(&["get", "cm", "--chunk-size=7", "-o", "name"]);
    assert_eq!(all.lines().count(), 25, "{all}");

    // get -w sees a change made after it started.
    let mut w = api
        .kubectl_cmd(&["get", "cm", "-w", "-o", "name"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    api.create_cm("late");
    std::thread::sleep(Duration::from_millis(800));
    let _ = w.kill();
    let out = w.wait_with_output().unwrap();
    let seen = String::from_utf8_lossy(&out.stdout);
    assert!(seen.contains("configmap/late"), "{seen}");
    assert!(seen.contains("configmap/cm-00"), "{seen}");

    // A raw watch from a compacted revision ends with 410 Expired.
    let rev: i64 = json(&api.curl(&["/api/v1/namespaces/default/configmaps"]).1)["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    api.create_cm("later");
    let out = api.etcd.etcdctl(&["compact", &(rev + 1).to_string()]);
    assert!(out.status.success(), "{out:?}");
    let (code, body) = api.curl(&[
        "/api/v1/namespaces/default/configmaps?watch=True&resourceVersion=2&timeoutSeconds=2",
    ]);
    assert_eq!(code, 200);
    let ev = json(body.lines().next().unwrap());
    assert_eq!(ev["type"], "ERROR");
    assert_eq!(ev["object"]["code"], 410);
    assert_eq!(ev["object"]["reason"], "Expired");

    // A watch from the list's revision (still kept) delivers the later change.
    let (code, body) = api.curl(&[&format!(
        "/api/v1/namespaces/default/configmaps?watch=1&resourceVersion={rev}&allowWatchBookmarks=true&timeoutSeconds=1"
    )]);
    assert_eq!(code, 200);
    let first = json(body.lines().next().unwrap());
    assert_eq!(first["type"], "ADDED");
    assert_eq!(first["object"]["metadata"]["name"], "later");
}

fn bad_requests_get_upstream_statuses_and_nothing_is_stored(kind: Kind) {
    let api = Api::start(kind);
    let post = |body: &str, ct: &str| {
        api.curl(&[
            "/api/v1/namespaces/default/configmaps",
            "-X",
            "POST",
            "-H",
            &format!("Content-Type: {ct}"),
            "--data-binary",
            body,
        ])
    };
    // Malformed JSON, a body that is not an object, the wrong kind for the URL.
    for body in [
        "{not json",
        "[1,2]",
        r#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"x"}}"#,
    ] {
        let (code, out) = post(body, "application/json");
        assert_eq!(code, 400, "{body}: {out}");
        let s = json(&out);
        assert_eq!(s["kind"], "Status");
        assert_eq!(s["reason"], "BadRequest");
    }
    // apiVersion/kind absent: inferred from the URL (the Python client sends neither).
    let (code, out) = post(r#"{"metadata":{"name":"inferred"},"data":{"a":"b"}}"#, "");
    assert_eq!(code, 201, "{out}");
    assert_eq!(json(&out)["kind"], "ConfigMap");
    // Invalid name: 422 with causes.
    let long = "x".repeat(300);
    let (code, out) = post(
        &format!(r#"{{"metadata":{{"name":"{long}"}}}}"#),
        "application/json",
    );
    assert_eq!(code, 422, "{out}");
    let s = json(&out);
    assert_eq!(s["reason"], "Invalid");
    assert_eq!(s["details"]["causes"][0]["field"], "metadata.name");
    let (code, _) = post(r#"{"metadata":{"name":"Bad_Name"}}"#, "application/json");
    assert_eq!(code, 422);
    // Over 3 MiB: 413.
    let big = format!(
        r#"{{"metadata":{{"name":"big"}},"data":{{"a":"{}"}}}}"#,
        "x".repeat(3 * 1024 * 1024 + 10)
    );
    let file = api.etcd.data.path.join("big.json");
    std::fs::write(&file, big).unwrap();
    let (code, _) = api.curl(&[
        "/api/v1/namespaces/default/configmaps",
        "-X",
        "POST",
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        &format!("@{}", file.display()),
    ]);
    assert_eq!(code, 413);
    // Unknown resources and unknown query parameters.
    let (code, out) = api.curl(&["/api/v1/nosuch"]);
    assert_eq!(code, 404);
    assert_eq!(json(&out)["reason"], "NotFound");
    let (code, _) = api.curl(&["/api/v1/namespaces/default/configmaps?bogus=1"]);
    assert_eq!(code, 400);
    // A namespace that does not exist.
    let (code, out) = api.curl(&[
        "/api/v1/namespaces/nope/configmaps",
        "-X",
        "POST",
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        r#"{"metadata":{"name":"x"}}"#,
    ]);
    assert_eq!(code, 404, "{out}");
    assert_eq!(json(&out)["message"], "namespaces \"nope\" not found");
    // Anonymous: 401 Status; health stays public.
    let (code, out) = api.curl_as(false, &["/api/v1/namespaces"]);
    assert_eq!(code, 401);
    assert_eq!(json(&out)["reason"], "Unauthorized");
    let wrong = api.kubectl_token("wrong", &["get", "ns"]);
    assert!(
        String::from_utf8_lossy(&wrong.stderr)
            .contains("error: You must be logged in to the server"),
        "{wrong:?}"
    );
    assert_eq!(api.curl_as(false, &["/readyz"]).0, 200);
    let (code, verbose) = api.curl_as(false, &["/readyz?verbose"]);
    assert_eq!(code, 200);
    assert!(
        verbose.contains("[+]etcd ok") && verbose.ends_with("readyz check passed\n"),
        "{verbose}"
    );
    // Values of the wrong JSON type are a 400, as Go's decoding refuses them.
    for (url, body) in [
        (
            "/apis/batch/v1/namespaces/default/jobs",
            r#"{"metadata":{"name":"j"},"spec":"x"}"#,
        ),
        (
            "/api/v1/namespaces/default/pods",
            r#"{"metadata":{"name":"p"},"spec":{"containers":["x"]}}"#,
        ),
        (
            "/apis/apps/v1/namespaces/default/deployments",
            r#"{"metadata":{"name":"d"},"spec":{"replicas":"3"}}"#,
        ),
    ] {
        let (code, out) = api.curl(&[
            url,
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            body,
        ]);
        assert_eq!(code, 400, "{url}: {out}");
        assert!(
            json(&out)["message"]
                .as_str()
                .unwrap()
                .contains("json: cannot unmarshal"),
            "{out}"
        );
    }
    // Subresources answer only their own verbs; the system namespaces stay.
    let (code, _) = api.curl(&[
        "/api/v1/namespaces/default/pods/nosuch/status",
        "-X",
        "DELETE",
    ]);
    assert_eq!(code, 405);
    let err = api.k_err(&["delete", "namespace", "default"]);
    assert!(
        err.contains("namespaces \"default\" is forbidden: this namespace may not be deleted"),
        "{err}"
    );
    // dryRun=All answers as a create would and stores nothing.
    let (code, out) = api.curl(&[
        "/api/v1/namespaces/default/configmaps?dryRun=All",
        "-X",
        "POST",
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        r#"{"metadata":{"name":"dry"}}"#,
    ]);
    assert_eq!(code, 201, "{out}");
    assert!(json(&out)["metadata"]["uid"].is_string());
    // Nothing of the bad requests was stored; the server still serves.
    let names = api.k(&["get", "cm", "-o", "name"]);
    assert_eq!(names, "configmap/inferred\n");
}

fn preconditions_deletecollection_and_selector_watches(kind: Kind) {
    let api = Api::start(kind);
    for (name, tier) in [("a", "web"), ("b", "web"), ("c", "db")] {
        api.apply(&format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  labels: {{tier: {tier}}}\n"
        ));
    }
    let rv = json(&api.curl(&["/api/v1/namespaces/default/configmaps"]).1)["metadata"]
        ["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();

    // A delete whose uid precondition does not hold is a 409 and deletes nothing.
    let (code, out) = api.curl(&[
        "/api/v1/namespaces/default/configmaps/a",
        "-X",
        "DELETE",
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        r#"{"preconditions":{"uid":"not-the-uid"}}"#,
    ]);
    assert_eq!(code, 409, "{out}");
    assert!(
        json(&out)["message"]
            .as_str()
            .unwrap()
            .contains("Precondition failed: UID in precondition: not-the-uid")
    );

    // An object relabelled out of a selector is DELETED for that selector's watchers.
    api.k(&["label", "cm", "b", "tier=db", "--overwrite"]);
    let (code, body) = api.curl(&[&format!(
        "/api/v1/namespaces/default/configmaps?watch=true&labelSelector=tier%3Dweb&resourceVersion={rv}&timeoutSeconds=1"
    )]);
    assert_eq!(code, 200);
    let events: Vec<(String, String)> = body
        .lines()
        .map(|l| {
            let e = json(l);
            (
                e["type"].as_str().unwrap().to_string(),
                e["object"]["metadata"]["name"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            )
        })
        .collect();
    assert_eq!(events, [("DELETED".to_string(), "b".to_string())], "{body}");

    // An event recorded through events.k8s.io/v1 is a core/v1 Event too (one store).
    let uid = json(&api.k(&["get", "cm", "a", "-o", "json"]))["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string();
    let event = format!(
        r#"{{"metadata":{{"name":"ev1"}},"eventTime":"2026-11-23T00:00:00.000000Z","reportingController":"test","reportingInstance":"t1","action":"Testing","reason":"Tested","type":"Normal","note":"it works","regarding":{{"kind":"ConfigMap","namespace":"default","name":"a","uid":"{uid}"}}}}"#
    );
    let (code, out) = api.curl(&[
        "/apis/events.k8s.io/v1/namespaces/default/events",
        "-X",
        "POST",
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        &event,
    ]);
    assert_eq!(code, 201, "{out}");
    assert_eq!(json(&out)["note"], "it works");
    let core = json(&api.k(&["get", "events.v1.", "ev1", "-o", "json"]));
    assert_eq!(core["message"], "it works");
    assert_eq!(core["involvedObject"]["name"], "a");
    assert_eq!(core["reportingComponent"], "test");
    let described = api.k(&["describe", "cm", "a"]);
    assert!(
        described.contains("Tested") && described.contains("it works"),
        "{described}"
    );

    // deletecollection with a selector removes exactly the matching objects.
    let (code, out) = api.curl(&[
        "/api/v1/namespaces/default/configmaps?labelSelector=tier%3Ddb",
        "-X",
        "DELETE",
    ]);
    assert_eq!(code, 200, "{out}");
    assert_eq!(json(&out)["items"].as_array().unwrap().len(), 2);
    assert_eq!(api.k(&["get", "cm", "-o", "name"]), "configmap/a\n");
}

fn conflicts_tokens_and_restart(kind: Kind) {
    let mut api = Api::start(kind);
    api.apply("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\ndata:\n  a: \"1\"\n");
    let cm = json(&api.k(&["get", "cm", "c", "-o", "json"]));
    let rv = cm["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let put = |body: &serde_json::Value| {
        api.curl(&[
            "/api/v1/namespaces/default/configmaps/c",
            "-X",
            "PUT",
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            &body.to_string(),
        ])
    };
    let mut next = cm.clone();
    next["data"]["a"] = "2".into();
    assert_eq!(put(&next).0, 200);
    // The same resourceVersion again is stale now: 409 Conflict.
    let (code, out) = put(&next);
    assert_eq!(code, 409, "{out}");
    assert!(
        json(&out)["message"]
            .as_str()
            .unwrap()
            .contains("the object has been modified")
    );
    let _ = rv;

    // A token user from known_tokens.csv.
    let tokens = String::from_utf8(api.etcd.data.read("credentials/known_tokens.csv")).unwrap();
    let admin_token = tokens
        .lines()
        .find(|l| l.contains(",admin,"))
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .to_string();
    let out = api.kubectl_token(
        &admin_token,
        &["get", "cm", "c", "-o", "jsonpath={.data.a}"],
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "2", "{out:?}");
    let (code, out) = api.curl_as(
        false,
        &[
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            "-X",
            "POST",
            "-H",
            &format!("Authorization: Bearer {admin_token}"),
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            "{}",
        ],
    );
    assert_eq!(code, 201, "{out}");
    let who = json(&out);
    assert_eq!(who["status"]["userInfo"]["username"], "admin");
    assert!(
        who["status"]["userInfo"]["groups"]
            .as_array()
            .unwrap()
            .contains(&"system:masters".into())
    );

    // Front-proxy headers count only on the front proxy's own certificate.
    let whoami = |cert: Option<&str>, user: Option<&str>| {
        let mut args = vec![
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "-H",
            "X-Remote-Group: devs",
            "-H",
            "X-Remote-Extra-Scopes: read",
            "--data-binary",
            "{}",
        ];
        let header;
        if let Some(u) = user {
            header = format!("X-Remote-User: {u}");
            args.extend(["-H", &header]);
        }
        api.curl_with(cert, &args)
    };
    let (code, out) = whoami(Some("front-proxy-client"), Some("alice"));
    assert_eq!(code, 201, "{out}");
    let info = &json(&out)["status"]["userInfo"];
    assert_eq!(info["username"], "alice");
    assert_eq!(
        info["groups"],
        serde_json::json!(["devs", "system:authenticated"])
    );
    assert_eq!(info["extra"]["scopes"], serde_json::json!(["read"]));
    let (_, out) = whoami(Some("admin"), Some("alice"));
    assert_eq!(json(&out)["status"]["userInfo"]["username"], "admin");
    assert_eq!(whoami(Some("front-proxy-client"), None).0, 401);
    assert_eq!(whoami(None, Some("alice")).0, 401);

    // Service-account tokens: TokenRequest (`kubectl create token`), then authentication
    // with it, and nothing once the service account is gone.
    api.k(&["create", "serviceaccount", "bot"]);
    let token = api.k(&["create", "token", "bot"]).trim().to_string();
    assert_eq!(token.split('.').count(), 3, "{token}");
    let who = api.kubectl_token(&token, &["auth", "whoami", "-o", "json"]);
    let who = json(&String::from_utf8_lossy(&who.stdout));
    assert_eq!(
        who["status"]["userInfo"]["username"],
        "system:serviceaccount:default:bot"
    );
    let groups = who["status"]["userInfo"]["groups"]
        .as_array()
        .unwrap()
        .clone();
    assert!(
        groups.contains(&"system:serviceaccounts:default".into()),
        "{groups:?}"
    );
    let review = serde_json::json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token}});
    let (code, out) = api.curl(&[
        "/apis/authentication.k8s.io/v1/tokenreviews",
        "-X",
        "POST",
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        &review.to_string(),
    ]);
    assert_eq!(code, 201, "{out}");
    assert_eq!(json(&out)["status"]["authenticated"], true);
    // A token for the API server is not good for another audience.
    let review = serde_json::json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
        "spec": {"token": token, "audiences": ["vault"]}});
    let (_, out) = api.curl(&[
        "/apis/authentication.k8s.io/v1/tokenreviews",
        "-X",
        "POST",
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        &review.to_string(),
    ]);
    assert_eq!(json(&out)["status"]["authenticated"], false, "{out}");
    assert!(
        api.k_err(&["create", "token", "nosuch"])
            .contains("serviceaccounts \"nosuch\" not found")
    );
    api.k(&["delete", "serviceaccount", "bot"]);
    let out = api.kubectl_token(&token, &["get", "cm"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("You must be logged in to the server"));

    // The data outlives an API server restart.
    api.restart();
    assert_eq!(api.k(&["get", "cm", "c", "-o", "jsonpath={.data.a}"]), "2");
}

fn python_kubernetes_client_lists_creates_patches_and_watches(kind: Kind) {
    let api = Api::start(kind);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/client_test.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(api.etcd.data.file("credentials/client.config"))
        .arg(api.server())
        .output()
        .expect("python3 (packaging/deps.sh installs the kubernetes client)");
    assert!(
        out.status.success() && out.stdout == b"ok\n",
        "{}\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        api.log()
    );
}

fn pods_describe_wait_graceful_delete_and_namespace_lifecycle(kind: Kind) {
    let api = Api::start(kind);
    assert_eq!(
        api.k(&["run", "p", "--image=busybox:1.36", "--restart=Never"]),
        "pod/p created\n"
    );
    let pods = api.k(&["get", "pods"]);
    assert_eq!(
        header(&pods),
        ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    );
    let row: Vec<&str> = pods.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(&row[..4], ["p", "0/1", "Pending", "0"], "{pods}");
    let pod = json(&api.k(&["get", "pod", "p", "-o", "json"]));
    assert_eq!(pod["status"]["qosClass"], "BestEffort");
    assert_eq!(pod["spec"]["dnsPolicy"], "ClusterFirst");
    assert_eq!(
        pod["spec"]["containers"][0]["imagePullPolicy"],
        "IfNotPresent"
    );
    // ServiceAccount admission: the default account and its projected token volume.
    assert_eq!(pod["spec"]["serviceAccountName"], "default");
    let volume = &pod["spec"]["volumes"][0];
    assert!(
        volume["name"]
            .as_str()
            .unwrap()
            .starts_with("kube-api-access-")
    );
    assert_eq!(
        volume["projected"]["sources"][0]["serviceAccountToken"]["path"],
        "token"
    );
    assert_eq!(
        pod["spec"]["containers"][0]["volumeMounts"][0]["mountPath"],
        "/var/run/secrets/kubernetes.io/serviceaccount"
    );
    let described = api.k(&["describe", "pod", "p"]);
    assert!(
        described
            .lines()
            .next()
            .is_some_and(|l| l.starts_with("Name:") && l.ends_with(" p"))
            && described
                .lines()
                .any(|l| l.starts_with("Status:") && l.ends_with(" Pending")),
        "{described}"
    );

    // `kubectl wait` is satisfied by a status change made after it started.
    let waiter = api
        .kubectl_cmd(&["wait", "--for=condition=Ready", "pod/p", "--timeout=30s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    let (code, out) = api.curl(&[
        "/api/v1/namespaces/default/pods/p/status",
        "-X",
        "PATCH",
        "-H",
        "Content-Type: application/merge-patch+json",
        "--data-binary",
        r#"{"status":{"conditions":[{"type":"Ready","status":"True"}]}}"#,
    ]);
    assert_eq!(code, 200, "{out}");
    let out = waiter.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "pod/p condition met\n"
    );

    // An unscheduled pod goes at once; a bound one waits for its kubelet (graceful).
    assert_eq!(api.k(&["delete", "pod", "p"]), "pod \"p\" deleted\n");
    api.k(&["run", "q", "--image=busybox:1.36", "--restart=Never"]);
    let (code, out) = api.curl(&[
        "/api/v1/namespaces/default/pods/q/binding",
        "-X",
        "POST",
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        r#"{"apiVersion":"v1","kind":"Binding","metadata":{"name":"q"},"target":{"kind":"Node","name":"node-1"}}"#,
    ]);
    assert_eq!(code, 201, "{out}");
    let (code, _) = api.curl(&[
        "/api/v1/namespaces/default/pods/q/binding",
        "-X",
        "POST",
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        r#"{"metadata":{"name":"q"},"target":{"kind":"Node","name":"node-2"}}"#,
    ]);
    assert_eq!(code, 409, "a pod is bound once");
    // An absurd grace period is clamped, not a crash.
    let (code, _) = api.curl(&[
        "/api/v1/namespaces/default/pods/q?gracePeriodSeconds=300000000000&dryRun=All",
        "-X",
        "DELETE",
    ]);
    assert_eq!(code, 200);
    api.k(&["delete", "pod", "q", "--wait=false"]);
    let q = json(&api.k(&["get", "pod", "q", "-o", "json"]));
    assert_eq!(q["metadata"]["deletionGracePeriodSeconds"], 30);
    assert!(api.k(&["get", "pod", "q"]).contains("Terminating"));
    let out = api.kubectl(&["delete", "pod", "q", "--grace-period=0", "--force"]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        api.k_err(&["get", "pod", "q"])
            .contains("pods \"q\" not found")
    );

    // A terminating namespace refuses new content until its finalizer is removed.
    api.k(&["create", "namespace", "gone"]);
    api.k(&["delete", "namespace", "gone", "--wait=false"]);
    assert!(api.k(&["get", "ns", "gone"]).contains("Terminating"));
    let (code, out) = api.curl(&[
        "/api/v1/namespaces/gone/configmaps",
        "-X",
        "POST",
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        r#"{"metadata":{"name":"late"}}"#,
    ]);
    assert_eq!(code, 403, "{out}");
    assert_eq!(
        json(&out)["message"],
        "configmaps \"late\" is forbidden: unable to create new content in namespace gone because it is being terminated"
    );
    let (code, out) = api.curl(&[
        "/api/v1/namespaces/gone/finalize",
        "-X",
        "PUT",
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        r#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"gone"},"spec":{"finalizers":[]}}"#,
    ]);
    assert_eq!(code, 200, "{out}");
    assert!(
        api.k_err(&["get", "ns", "gone"])
            .contains("namespaces \"gone\" not found")
    );
}

fn server_side_apply_creates_updates_removes_and_conflicts(kind: Kind) {
    let api = Api::start(kind);
    let cm = |data: &str| {
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ssa\ndata:\n{data}")
    };
    let ssa = |args: &[&str], manifest: &str| {
        let mut all = vec!["apply", "--server-side", "-f", "-"];
        all.extend_from_slice(args);
        api.kubectl_stdin(&all, manifest)
    };
    let out = ssa(&[], &cm("  a: \"1\"\n  b: \"1\"\n"));
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "configmap/ssa serverside-applied\n"
    );
    let rv = |api: &Api| {
        json(&api.k(&["get", "cm", "ssa", "-o", "json"]))["metadata"]["resourceVersion"].clone()
    };
    let before = rv(&api);
    assert!(ssa(&[], &cm("  a: \"1\"\n  b: \"1\"\n")).status.success());
    assert_eq!(rv(&api), before, "the same apply twice writes nothing");

    // A field left out of the next apply is removed; a changed one is updated.
    assert!(ssa(&[], &cm("  a: \"2\"\n")).status.success());
    let got = json(&api.k(&["get", "cm", "ssa", "-o", "json", "--show-managed-fields"]));
    assert_eq!(got["data"], serde_json::json!({"a": "2"}));
    let entry = &got["metadata"]["managedFields"][0];
    assert_eq!(entry["manager"], "kubectl");
    assert_eq!(entry["operation"], "Apply");
    assert_eq!(entry["fieldsV1"]["f:data"]["f:a"], serde_json::json!({}));

    // Another manager conflicts on a field it does not own, until it forces.
    let out = ssa(&["--field-manager=other"], &cm("  a: \"3\"\n"));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("error: Apply failed with 1 conflict: conflict with \"kubectl\": .data.a"),
        "{err}"
    );
    let out = ssa(
        &["--field-manager=other", "--force-conflicts"],
        &cm("  a: \"3\"\n"),
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        api.k(&["get", "cm", "ssa", "-o", "jsonpath={.data.a}"]),
        "3"
    );

    // An ordinary update takes ownership too: a later apply conflicts with it.
    api.k(&[
        "patch",
        "cm",
        "ssa",
        "--type=merge",
        "-p",
        r#"{"data":{"a":"9"}}"#,
    ]);
    let out = ssa(&["--field-manager=other"], &cm("  a: \"4\"\n"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("conflict with \"kubectl-patch\""), "{err}");

    // Apply without a field manager is refused as upstream.
    let (code, out) = api.curl(&[
        "/api/v1/namespaces/default/configmaps/raw",
        "-X",
        "PATCH",
        "-H",
        "Content-Type: application/apply-patch+yaml",
        "--data-binary",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: raw\n",
    ]);
    assert_eq!(code, 422, "{out}");
    assert_eq!(
        json(&out)["message"],
        "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch"
    );
    // Controllers apply status through the status subresource; spec stays as it was.
    api.apply("apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: d\nspec:\n  replicas: 1\n  selector:\n    matchLabels: {app: d}\n  template:\n    metadata:\n      labels: {app: d}\n    spec:\n      containers:\n      - name: c\n        image: busybox:1.36\n");
    let (code, out) = api.curl(&[
        "/apis/apps/v1/namespaces/default/deployments/d/status?fieldManager=ctrl",
        "-X",
        "PATCH",
        "-H",
        "Content-Type: application/apply-patch+yaml",
        "--data-binary",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: d\nspec:\n  replicas: 5\nstatus:\n  replicas: 2\n",
    ]);
    assert_eq!(code, 200, "{out}");
    let d = json(&out);
    assert_eq!(d["status"]["replicas"], 2);
    assert_eq!(d["spec"]["replicas"], 1, "a status apply leaves spec alone");
    // A YAML body from any client creates the object.
    let (code, out) = api.curl(&[
        "/api/v1/namespaces/default/configmaps/raw?fieldManager=curl",
        "-X",
        "PATCH",
        "-H",
        "Content-Type: application/apply-patch+yaml",
        "--data-binary",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: raw\ndata:\n  k: v\n",
    ]);
    assert_eq!(code, 201, "{out}");
    assert_eq!(json(&out)["data"]["k"], "v");
}

/// Every scenario runs twice: on the mk8s datastore and on Debian's real etcd 3.4.
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod on_mk8s_datastore {
            $( #[test] fn $name() { super::$name(crate::etcd::Kind::Mk8s) } )*
        }
        mod on_real_etcd {
            $( #[test] fn $name() { super::$name(crate::etcd::Kind::RealEtcd) } )*
        }
    };
}
pub(crate) use on_both_stores;

on_both_stores!(
    kubectl_crud,
    preconditions_deletecollection_and_selector_watches,
    paging_watch_and_expired_versions,
    bad_requests_get_upstream_statuses_and_nothing_is_stored,
    conflicts_tokens_and_restart,
    python_kubernetes_client_lists_creates_patches_and_watches,
    pods_describe_wait_graceful_delete_and_namespace_lifecycle,
    server_side_apply_creates_updates_removes_and_conflicts,
);
