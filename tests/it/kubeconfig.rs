//! Kubeconfigs, judged by the real kubectl.

use std::process::Command;

use crate::util::*;

fn kubectl_view(path: &std::path::Path) -> String {
    // kubectl keeps a cache under $HOME: give it a throwaway one.
    let home = tempfile::tempdir().unwrap();
    let out = Command::new("kubectl")
        .args(["config", "view", "--raw", "--kubeconfig"])
        .arg(path)
        .env("HOME", home.path())
        .output()
        .expect("kubectl must be installed");
    assert!(
        out.status.success(),
        "kubectl config view {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn kubectl_parses_every_kubeconfig() {
    let d = DataDir::bootstrapped();
    for kc in KUBECONFIGS {
        let view = kubectl_view(&d.file(&format!("credentials/{kc}")));
        assert!(
            view.contains("server: https://127.0.0.1:16443"),
            "{kc}: {view}"
        );
        assert!(view.contains("current-context: mk8s"), "{kc}: {view}");
        assert!(view.contains("client-certificate-data:"), "{kc}: {view}");
    }
}

#[test]
fn config_prints_the_admin_kubeconfig_for_the_lan() {
    let d = DataDir::bootstrapped();
    let client = String::from_utf8(d.read("credentials/client.config")).unwrap();
    let lan = d.ok(&["config"]);
    // As MicroK8s: the address of the default-route interface, per iproute2.
    let ip = default_route_ipv4().unwrap_or_else(|| "127.0.0.1".to_string());
    assert!(
        lan.contains(&format!("server: https://{ip}:16443")),
        "{lan}"
    );
    assert_eq!(lan.replace(&ip, "127.0.0.1"), client);
    // The loopback form is the file itself, and kubectl reads it.
    let local = d.ok(&["config", "--use-loopback"]);
    assert_eq!(local, client);
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("kubeconfig");
    std::fs::write(&p, &local).unwrap();
    kubectl_view(&p);
}

/// The first IPv4 address of the default route's interface, as `ip` reports it.
fn default_route_ipv4() -> Option<String> {
    let run = |args: &[&str]| {
        let out = Command::new("ip")
            .args(args)
            .output()
            .expect("ip (iproute2)");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let route = run(&["-4", "route", "show", "default"]);
    let mut words = route.split_whitespace();
    words.find(|w| *w == "dev")?;
    let dev = words.next()?.to_string();
    let addrs = run(&["-4", "-o", "addr", "show", "dev", &dev]);
    let mut words = addrs.split_whitespace();
    words.find(|w| *w == "inet")?;
    words.next()?.split('/').next().map(str::to_string)
}
