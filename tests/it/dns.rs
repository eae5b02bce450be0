//! Cluster DNS (`mk8s enable dns`) on a whole cluster under RBAC, judged by the real `dig`:
//! the kube-dns Service and its endpoints, A/SRV/PTR/CNAME records from Services and
//! EndpointSlices made by hand (no pods), NXDOMAIN vs NODATA with upstream's TTLs, garbage
//! datagrams answered FORMERR without harm, and `disable dns` taking it all away. Upstream
//! resolvers are a local port nothing listens on (see `Cluster::new`), so forwarding fails
//! fast and never leaves the machine. `dns_from_pods` is the in-pod scenario for the pods e2e.

use std::net::UdpSocket;
use std::process::Command;
use std::time::Duration;

use crate::cluster::Cluster;

use crate::pods::{apply, jsonpath, wait_for as eventually};

/// kubectl's success and its stdout and stderr together.
fn kubectl(c: &Cluster, args: &[&str]) -> (bool, String) {
    let (ok, out, err) = crate::pods::kubectl(c, args);
    (ok, out + &err)
}

/// The daemon on loopback, at the port the kube-dns EndpointSlice names.
struct Server {
    addr: String,
    port: String,
}

impl Server {
    /// `dig` at the daemon: the whole reply, so status, flags and sections can be checked.
    fn dig(&self, args: &[&str]) -> String {
        let out = Command::new("dig")
            .arg(format!("@{}", self.addr))
            .args(["-p", &self.port, "+time=2", "+tries=1"])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The answer section's records as `name ttl type data`, sorted.
    fn answers(&self, args: &[&str]) -> Vec<String> {
        self.section(args, "+answer")
    }

    /// One section's records (`+answer`, `+authority`, `+additional`), as [`Self::answers`].
    fn section(&self, args: &[&str], which: &str) -> Vec<String> {
        let mut a: Vec<&str> = args.to_vec();
        a.extend(["+noall", which]);
        let mut v: Vec<String> = self
            .dig(&a)
            .lines()
            .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
            .map(|l| {
                l.split_whitespace()
                    .filter(|w| *w != "IN")
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        v.sort();
        v
    }

    fn status(&self, args: &[&str]) -> String {
        let out = self.dig(args);
        out.split("status: ")
            .nth(1)
            .and_then(|s| s.split(',').next())
            .unwrap_or("no reply")
            .to_string()
    }
}

fn server(c: &Cluster) -> Server {
    let both = jsonpath(
        c,
        &["endpointslice", "kube-dns", "-n", "kube-system"],
        "{.endpoints[0].addresses[0]} {.ports[0].port}",
    );
    let (addr, port) = both.split_once(' ').unwrap();
    assert!(addr.parse::<std::net::IpAddr>().is_ok(), "{both}");
    Server {
        addr: "127.0.0.1".to_string(),
        port: port.to_string(),
    }
}

/// A datagram with a DNS header claiming one question, then junk: FORMERR, same id.
fn garbage_gets_formerr(s: &Server) {
    let sock = UdpSocket::bind("0.0.0.0:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let to = format!("{}:{}", s.addr, s.port);
    let junk: &[u8] = &[
        0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0xff, 0xfe, 0xfd, 0x07, 0x00,
    ];
    sock.send_to(junk, &to).unwrap();
    let mut buf = [0u8; 512];
    let (n, _) = sock.recv_from(&mut buf).expect("an answer to garbage");
    assert!(n >= 12, "{:?}", &buf[..n]);
    assert_eq!(&buf[..2], &[0x12, 0x34], "the id is echoed");
    assert_eq!(buf[2] & 0x80, 0x80, "a response");
    assert_eq!(buf[3] & 0x0f, 1, "FORMERR");
    // Shorter than a header, empty, and random: dropped or refused, never a crash.
    for bytes in [&b""[..], &b"\x00\x01\x02"[..], &[0xffu8; 300][..]] {
        sock.send_to(bytes, &to).unwrap();
    }
}

const OBJECTS: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, protocol: TCP, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: default}
spec:
  clusterIP: None
  ports: [{name: pg, port: 5432, protocol: TCP}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: db-1
  namespace: default
  labels: {kubernetes.io/service-name: db, endpointslice.kubernetes.io/managed-by: dns-test}
addressType: IPv4
endpoints:
- addresses: [10.1.0.7]
  hostname: db-0
  conditions: {ready: true}
- addresses: [10.1.0.8]
  conditions: {ready: true}
- addresses: [10.1.0.9]
  conditions: {ready: false}
ports: [{name: pg, port: 5432, protocol: TCP}]
---
apiVersion: v1
kind: Service
metadata: {name: ext, namespace: default}
spec:
  type: ExternalName
  externalName: db.example.com
"#;

#[test]
fn dns_addon_serves_services_and_goes_away() {
    let c = Cluster::new();
    let out = c.mk8s(&["start"]);
    assert!(out.status.success(), "start: {out:?}");
    let yaml = c.ok(&["status", "--format", "yaml"]);
    assert!(yaml.contains("- name: dns\n  status: disabled"), "{yaml}");
    assert!(yaml.contains("- name: dns\n  state: disabled"), "{yaml}");
    assert!(
        c.mk8s(&["enable", "nosuch"]).status.code() != Some(0),
        "unknown addon"
    );
    // Under RBAC the daemon must get by with its own least-privilege identity.
    c.ok(&["enable", "rbac"]);
    let out = c.ok(&["enable", "dns"]);
    assert!(out.ends_with("dns is enabled\n"), "{out}");
    assert!(c.ok(&["enable", "dns"]).contains("already enabled"));
    let kubelet = std::fs::read_to_string(c.data.join("args/kubelet")).unwrap();
    assert!(
        kubelet.contains("\n--cluster-dns=10.152.183.10\n"),
        "{kubelet}"
    );
    let yaml = c.ok(&["status", "--format", "yaml"]);
    assert!(yaml.contains("- name: dns\n  status: enabled"), "{yaml}");
    assert!(yaml.contains("- name: dns\n  state: running"), "{yaml}");
    let pretty = c.ok(&["status"]);
    let enabled = pretty.split("disabled:").next().unwrap();
    assert!(enabled.contains("    dns "), "{pretty}");

    // The Service pods use, as MicroK8s's CoreDNS has it.
    let svc = jsonpath(
        &c,
        &["service", "kube-dns", "-n", "kube-system"],
        "{.spec.clusterIP} {.spec.ports[*].name} {.spec.ports[*].protocol} {.spec.ports[*].port} {.metadata.labels.k8s-app} {.metadata.labels.kubernetes\\.io/name}",
    );
    assert_eq!(
        svc,
        "10.152.183.10 dns dns-tcp UDP TCP 53 53 kube-dns CoreDNS"
    );
    let s = server(&c);
    let target = jsonpath(
        &c,
        &["service", "kube-dns", "-n", "kube-system"],
        "{.spec.ports[0].targetPort}",
    );
    assert_eq!(target, s.port);
    let ep = jsonpath(
        &c,
        &["endpoints", "kube-dns", "-n", "kube-system"],
        "{.subsets[0].addresses[0].ip}:{.subsets[0].ports[0].port}",
    );
    let slice_ep = jsonpath(
        &c,
        &["endpointslice", "kube-dns", "-n", "kube-system"],
        "{.endpoints[0].addresses[0]}:{.ports[0].port}",
    );
    assert_eq!(ep, slice_ep);
    assert!(ep.ends_with(&format!(":{}", s.port)), "{ep}");

    // The API server's own Service, with CoreDNS's 5 s TTL, over UDP and TCP.
    assert_eq!(
        s.answers(&["kubernetes.default.svc.cluster.local", "A"]),
        ["kubernetes.default.svc.cluster.local. 5 A 10.152.183.1"]
    );
    assert_eq!(
        s.answers(&["+tcp", "kubernetes.default.svc.cluster.local", "A"]),
        ["kubernetes.default.svc.cluster.local. 5 A 10.152.183.1"]
    );
    let full = s.dig(&["kubernetes.default.svc.cluster.local", "A"]);
    assert!(full.contains("flags: qr aa rd ra"), "{full}");

    apply(&c, OBJECTS);
    let web_ip = jsonpath(&c, &["service", "web"], "{.spec.clusterIP}");
    assert!(!web_ip.is_empty());
    eventually("web's A record", 20, || {
        s.answers(&["web.default.svc.cluster.local", "A"])
            == [format!("web.default.svc.cluster.local. 5 A {web_ip}")]
    });
    assert_eq!(
        s.answers(&["_http._tcp.web.default.svc.cluster.local", "SRV"]),
        ["_http._tcp.web.default.svc.cluster.local. 5 SRV 0 100 80 web.default.svc.cluster.local."]
    );
    let rev: Vec<&str> = web_ip.split('.').rev().collect();
    let ptr = format!("{}.in-addr.arpa", rev.join("."));
    assert_eq!(
        s.answers(&[&ptr, "PTR"]),
        [format!("{ptr}. 5 PTR web.default.svc.cluster.local.")]
    );
    assert_eq!(
        s.answers(&["-x", "10.152.183.10"]),
        ["10.183.152.10.in-addr.arpa. 5 PTR kube-dns.kube-system.svc.cluster.local."]
    );

    // Headless: the ready endpoints, by hostname or dashed address.
    eventually("db's endpoints", 20, || {
        s.answers(&["db.default.svc.cluster.local", "A"])
            == [
                "db.default.svc.cluster.local. 5 A 10.1.0.7",
                "db.default.svc.cluster.local. 5 A 10.1.0.8",
            ]
    });
    assert_eq!(
        s.answers(&["db-0.db.default.svc.cluster.local", "A"]),
        ["db-0.db.default.svc.cluster.local. 5 A 10.1.0.7"]
    );
    assert_eq!(
        s.answers(&["10-1-0-8.db.default.svc.cluster.local", "A"]),
        ["10-1-0-8.db.default.svc.cluster.local. 5 A 10.1.0.8"]
    );
    assert_eq!(
        s.answers(&["_pg._tcp.db.default.svc.cluster.local", "SRV"]),
        [
            "_pg._tcp.db.default.svc.cluster.local. 5 SRV 0 50 5432 10-1-0-8.db.default.svc.cluster.local.",
            "_pg._tcp.db.default.svc.cluster.local. 5 SRV 0 50 5432 db-0.db.default.svc.cluster.local.",
        ]
    );
    assert_eq!(
        s.section(
            &["_pg._tcp.db.default.svc.cluster.local", "SRV"],
            "+additional"
        ),
        [
            "10-1-0-8.db.default.svc.cluster.local. 5 A 10.1.0.8",
            "db-0.db.default.svc.cluster.local. 5 A 10.1.0.7",
        ],
        "the targets' addresses"
    );
    assert_eq!(
        s.answers(&["-x", "10.1.0.7"]),
        ["7.0.1.10.in-addr.arpa. 5 PTR db-0.db.default.svc.cluster.local."]
    );

    // ExternalName: the alias (its target is upstream's, which does not answer here).
    eventually("ext's CNAME", 20, || {
        s.answers(&["ext.default.svc.cluster.local", "A"])
            == ["ext.default.svc.cluster.local. 5 CNAME db.example.com."]
    });

    // Negative answers: NXDOMAIN for no such name, NODATA for no such type, with the SOA.
    let nx = s.dig(&["nope.default.svc.cluster.local", "A"]);
    assert!(nx.contains("status: NXDOMAIN"), "{nx}");
    let soa = s.section(&["nope.default.svc.cluster.local", "A"], "+authority");
    assert_eq!(soa.len(), 1, "{nx}");
    assert!(
        soa[0].starts_with("cluster.local. 5 SOA ns.dns.cluster.local. hostmaster.cluster.local. ")
            && soa[0].ends_with(" 7200 1800 86400 5"),
        "{soa:?}"
    );
    let nodata = s.dig(&["kubernetes.default.svc.cluster.local", "AAAA"]);
    assert!(nodata.contains("status: NOERROR"), "{nodata}");
    assert!(nodata.contains("ANSWER: 0"), "{nodata}");
    assert_eq!(s.status(&["default.svc.cluster.local", "A"]), "NOERROR");
    assert_eq!(s.status(&["nowhere.svc.cluster.local", "A"]), "NXDOMAIN");
    assert_eq!(
        s.status(&["10-1-0-9.db.default.svc.cluster.local", "A"]),
        "NXDOMAIN"
    );
    // Other names go upstream, which does not answer: SERVFAIL, quickly.
    assert_eq!(s.status(&["example.org", "A"]), "SERVFAIL");

    // Garbage does not hurt.
    garbage_gets_formerr(&s);
    assert_eq!(
        s.answers(&["kubernetes.default.svc.cluster.local", "A"]),
        ["kubernetes.default.svc.cluster.local. 5 A 10.152.183.1"]
    );

    // Changes follow the watch.
    let (ok, out) = kubectl(&c, &["delete", "service", "web"]);
    assert!(ok, "{out}");
    eventually("web to be gone", 20, || {
        s.status(&["web.default.svc.cluster.local", "A"]) == "NXDOMAIN"
    });

    let dns_pid = c.pid("dns").expect("the dns daemon's pid file");
    let out = c.ok(&["disable", "dns"]);
    assert!(out.ends_with("dns is disabled\n"), "{out}");
    let (ok, out) = kubectl(&c, &["get", "service", "kube-dns", "-n", "kube-system"]);
    assert!(!ok && out.contains("NotFound"), "{out}");
    let (ok, out) = kubectl(
        &c,
        &["get", "endpointslice", "kube-dns", "-n", "kube-system"],
    );
    assert!(!ok && out.contains("NotFound"), "{out}");
    assert!(c.pid("dns").is_none());
    assert!(!std::path::Path::new(&format!("/proc/{dns_pid}")).exists());
    assert_eq!(
        s.status(&["kubernetes.default.svc.cluster.local", "A"]),
        "no reply"
    );
    let kubelet = std::fs::read_to_string(c.data.join("args/kubelet")).unwrap();
    assert!(!kubelet.contains("cluster-dns"), "{kubelet}");
    let yaml = c.ok(&["status", "--format", "yaml"]);
    assert!(yaml.contains("- name: dns\n  status: disabled"), "{yaml}");
    assert!(yaml.contains("- name: dns\n  state: disabled"), "{yaml}");
    assert!(c.ok(&["disable", "dns"]).contains("already disabled"));

    // And back, on the same settings.
    c.ok(&["enable", "dns"]);
    assert_eq!(
        server(&c).answers(&["kubernetes.default.svc.cluster.local", "A"]),
        ["kubernetes.default.svc.cluster.local. 5 A 10.152.183.1"]
    );
}

/// From a busybox pod (the pods e2e calls this once `enable dns` is on and the node proxy
/// routes 10.152.183.10): the pod's resolv.conf search path finds `kubernetes.default`, and a
/// headless Service resolves to its pods' IPs.
/// From a pod: the kubelet's resolv.conf, the API server's Service by name (and HTTPS to
/// `https://kubernetes.default.svc/api` with the pod's token), a headless Service's pod, and a
/// Service by its full and short name through the search list and the proxy
/// (`web` fronts the httpd pod). busybox's `nslookup` asks for exactly the name it is given
/// (no search list), so it gets full names; `wget` resolves through libc, which applies it.
/// (Debian's static busybox `wget -T` crashes, hence `timeout`.)
pub fn dns_from_pods(c: &Cluster) {
    apply(
        c,
        r#"
apiVersion: v1
kind: Service
metadata: {name: dns-peers, namespace: default}
spec:
  clusterIP: None
  selector: {app: dns-peers}
  ports: [{name: http, port: 8080}]
---
apiVersion: v1
kind: Pod
metadata: {name: dns-peer, namespace: default, labels: {app: dns-peers}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - {name: c, image: busybox:1.35, command: [sleep, "3600"]}
"#,
    );
    eventually("the dns-peer pod to be ready", 120, || {
        jsonpath(
            c,
            &["pod", "dns-peer"],
            "{.status.conditions[?(@.type==\"Ready\")].status}",
        ) == "True"
    });
    let (ok, resolv) = kubectl(c, &["exec", "dns-peer", "--", "cat", "/etc/resolv.conf"]);
    assert!(ok, "{resolv}");
    for line in [
        "nameserver 10.152.183.10",
        "search default.svc.cluster.local svc.cluster.local cluster.local",
        "options ndots:5",
    ] {
        assert!(
            resolv.lines().any(|l| l.trim() == line),
            "{line}:\n{resolv}"
        );
    }
    let pod_ip = jsonpath(c, &["pod", "dns-peer"], "{.status.podIP}");
    let lookup = |name: &str| kubectl(c, &["exec", "dns-peer", "--", "nslookup", name]);
    eventually("kubernetes.default to resolve in the pod", 60, || {
        let (ok, out) = lookup("kubernetes.default.svc.cluster.local");
        ok && out.contains("Address: 10.152.183.1")
    });
    eventually("the headless service to resolve to its pod", 60, || {
        let (ok, out) = lookup("dns-peers.default.svc.cluster.local");
        ok && out.contains(&format!("Address: {pod_ip}"))
    });
    let (ok, out) = lookup("nosuch.default.svc.cluster.local");
    assert!(!ok && out.contains("NXDOMAIN"), "{out}");
    // Through libc's resolver, which applies the search list; `wget` names the address it
    // connects to. Port 443 of `kubernetes` answers plain HTTP with a 400, which is fine here.
    let wget = |url: &str| {
        kubectl(
            c,
            &[
                "exec", "dns-peer", "--", "busybox", "timeout", "5", "wget", "-O-", url,
            ],
        )
    };
    let (_, out) = wget("http://kubernetes.default:443/");
    assert!(
        out.contains("Connecting to kubernetes.default:443 (10.152.183.1:443)"),
        "{out}"
    );
    // The in-cluster path to the API: `kubernetes.default.svc` as the pod's resolver finds it,
    // then HTTPS checked against the pod's ca.crt for that name, with the pod's token.
    let (_, out) = wget("http://kubernetes.default.svc:443/");
    let ip = out
        .split("Connecting to kubernetes.default.svc:443 (")
        .nth(1)
        .and_then(|rest| rest.split(':').next())
        .unwrap_or_else(|| panic!("kubernetes.default.svc did not resolve: {out}"))
        .to_string();
    assert_eq!(ip, "10.152.183.1");
    let sa = "/var/run/secrets/kubernetes.io/serviceaccount";
    let (ok, token) = kubectl(
        c,
        &["exec", "dns-peer", "--", "cat", &format!("{sa}/token")],
    );
    assert!(ok, "{token}");
    let (ok, ca) = kubectl(
        c,
        &["exec", "dns-peer", "--", "cat", &format!("{sa}/ca.crt")],
    );
    assert!(ok, "{ca}");
    let ca_file = c.common.join("dns-peer-ca.crt");
    std::fs::write(&ca_file, ca).unwrap();
    let out = crate::proxy::in_pod_netns(c, "dns-peer")
        .args(["curl", "-sS", "--max-time", "10", "--cacert"])
        .arg(&ca_file)
        .args(["--resolve", &format!("kubernetes.default.svc:443:{ip}")])
        .args(["-H", &format!("Authorization: Bearer {}", token.trim())])
        .arg("https://kubernetes.default.svc/api")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("APIVersions"),
        "{out:?}"
    );
    for url in ["http://web.default.svc.cluster.local", "http://web"] {
        let mut last = String::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !last.contains("hello-web") {
            assert!(
                std::time::Instant::now() < deadline,
                "{url} never answered from the pod: {last}"
            );
            std::thread::sleep(Duration::from_millis(250));
            last = wget(url).1;
        }
    }
    let (ok, out) = kubectl(c, &["delete", "pod/dns-peer", "service/dns-peers"]);
    assert!(ok, "{out}");
}
