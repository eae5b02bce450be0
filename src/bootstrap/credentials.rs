//! `credentials/`: static tokens, basic-auth passwords and kubeconfigs.
//!
//! Formats are upstream's: `--token-auth-file` lines `token,user,uid,"group1,group2"`, the same
//! shape for basic auth, and kubeconfigs with the CA and client certificate embedded.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use rand::Rng;
use rand::distr::Alphanumeric;

/// MicroK8s's API server port, used when `args/kube-apiserver` does not set one.
pub const APISERVER_PORT: u16 = 16443;

/// The API server's port as `args/kube-apiserver` sets it (`--secure-port`), so every
/// kubeconfig follows a moved API server; 16443 when the file or flag is absent or unreadable.
pub fn apiserver_port(paths: &crate::common::paths::Paths) -> u16 {
    let file = paths.data_file("args/kube-apiserver");
    crate::common::args::load(&file, &[], &paths.vars())
        .ok()
        .and_then(|flags| {
            flags
                .iter()
                .rev()
                .find(|f| f.name == "secure-port")
                .and_then(|f| f.value.parse().ok())
        })
        .unwrap_or(APISERVER_PORT)
}

/// `https://127.0.0.1:<port>`: where the components on this machine reach the API server.
pub fn local_server(paths: &crate::common::paths::Paths) -> String {
    format!("https://127.0.0.1:{}", apiserver_port(paths))
}

const KUBECONFIG_TEMPLATE: &str = include_str!("../../templates/kubeconfig.tera");

/// What can fail while producing credentials.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// A template shipped with the binary did not render.
    #[error("cannot render {name}: {cause}")]
    Template { name: String, cause: tera::Error },
}

/// A kubeconfig to write: file under `credentials/`, user name, and the cert pair it embeds.
pub struct KubeconfigDef {
    pub file: &'static str,
    pub user: &'static str,
    pub cert: &'static str,
}

/// The admin kubeconfig and one per component, each with its own identity.
pub const KUBECONFIGS: &[KubeconfigDef] = &[
    KubeconfigDef {
        file: "client.config",
        user: "admin",
        cert: "admin",
    },
    KubeconfigDef {
        file: "kubelet.config",
        user: "kubelet",
        cert: "kubelet",
    },
    KubeconfigDef {
        file: "controller.config",
        user: "controller",
        cert: "controller",
    },
    KubeconfigDef {
        file: "scheduler.config",
        user: "scheduler",
        cert: "scheduler",
    },
    KubeconfigDef {
        file: "proxy.config",
        user: "proxy",
        cert: "proxy",
    },
    KubeconfigDef {
        file: "dns.config",
        user: "dns",
        cert: "dns",
    },
];

/// A random secret of `len` letters and digits.
pub fn random_secret(len: usize) -> String {
    rand::rng()
        .sample_iter(Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

/// A new `known_tokens.csv`, one token per component identity.
pub fn new_known_tokens(node: &str) -> String {
    let rows = [
        ("admin".to_string(), "admin", Some("system:masters")),
        (
            format!("system:node:{node}"),
            "kubelet-0",
            Some("system:nodes"),
        ),
        ("system:kube-proxy".to_string(), "kube-proxy", None),
        (
            "system:kube-scheduler".to_string(),
            "system:kube-scheduler",
            None,
        ),
        (
            "system:kube-controller-manager".to_string(),
            "system:kube-controller-manager",
            None,
        ),
    ];
    let mut out = String::new();
    for (user, uid, groups) in rows {
        out.push_str(&random_secret(32));
        out.push(',');
        out.push_str(&user);
        out.push(',');
        out.push_str(uid);
        if let Some(g) = groups {
            out.push_str(&format!(",\"{g}\""));
        }
        out.push('\n');
    }
    out
}

/// A new `basic_auth.csv` with an admin password.
pub fn new_basic_auth() -> String {
    format!("{},admin,admin,\"system:masters\"\n", random_secret(32))
}

/// Renders a kubeconfig for `user` against `server`, embedding the PEM files given.
pub fn render_kubeconfig(
    server: &str,
    user: &str,
    ca_pem: &[u8],
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<String, CredentialsError> {
    let mut ctx = tera::Context::new();
    ctx.insert("server", server);
    ctx.insert("user", user);
    ctx.insert("ca_data", &B64.encode(ca_pem));
    ctx.insert("cert_data", &B64.encode(cert_pem));
    ctx.insert("key_data", &B64.encode(key_pem));
    tera::Tera::one_off(KUBECONFIG_TEMPLATE, &ctx, false).map_err(|cause| {
        CredentialsError::Template {
            name: "kubeconfig".into(),
            cause,
        }
    })
}

/// The admin kubeconfig with its `server:` lines pointed at `server`, as `microk8s config`
/// prints it for use from another machine.
pub fn with_server(kubeconfig: &str, server: &str) -> String {
    let mut out = String::with_capacity(kubeconfig.len());
    for line in kubeconfig.lines() {
        let trimmed = line.trim_start();
        if let Some(rest) = trimmed.strip_prefix("server:") {
            let indent = &line[..line.len() - trimmed.len()];
            if !rest.trim().is_empty() {
                out.push_str(&format!("{indent}server: {server}\n"));
                continue;
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_follow_the_static_token_file_format() {
        let csv = new_known_tokens("node1");
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.len(), 5);
        assert!(lines[0].ends_with(",admin,admin,\"system:masters\""));
        assert!(lines[1].ends_with(",system:node:node1,kubelet-0,\"system:nodes\""));
        let token = lines[0].split(',').next().unwrap();
        assert_eq!(token.len(), 32);
        assert_ne!(csv, new_known_tokens("node1"));
    }

    #[test]
    fn with_server_rewrites_only_the_server() {
        let k = render_kubeconfig("https://127.0.0.1:16443", "admin", b"ca", b"c", b"k").unwrap();
        let lan = with_server(&k, "https://192.0.2.2:16443");
        assert!(lan.contains("    server: https://192.0.2.2:16443\n"));
        assert_eq!(lan.replace("192.0.2.2", "127.0.0.1"), k);
    }
}
