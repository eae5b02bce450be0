//! The `dns` addon's own part (its flag on the kubelet is in the ADDONS table): `args/dns`,
//! and, as the admin, the objects that point pods at the daemon — the selectorless Service
//! `kube-system/kube-dns` on 10.152.183.10 (ports `dns` 53/UDP and `dns-tcp` 53/TCP, as
//! MicroK8s's CoreDNS), its EndpointSlice and Endpoints naming the daemon's address and port,
//! and the ClusterRoleBinding giving the daemon's identity (`system:kube-dns`) upstream's
//! `system:kube-dns` role (list and watch Services, Endpoints, EndpointSlices).

use std::fmt::Debug;
use std::net::IpAddr;

use anyhow::Context;
use k8s_openapi::api::core::v1::{Endpoints, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::common::paths::Paths;
use crate::dns;

const BINDING: &str = "system:mk8s:kube-dns";
/// The daemon's user (CN of `certs/dns.crt`).
const DNS_USER: &str = "system:kube-dns";
/// Marks the slice as ours, so the EndpointSlice controller leaves it alone.
const MANAGED_BY: &str = "mk8s-dns-addon";

/// The addon's own part is on: its args file exists.
pub fn installed(paths: &Paths) -> bool {
    paths.data_file("args").join(dns::ARGS_FILE).exists()
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

async fn admin_client(paths: &Paths) -> anyhow::Result<kube::Client> {
    let path = paths.data_file("credentials/client.config");
    let kc = kube::config::Kubeconfig::read_from(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .with_context(|| format!("invalid kubeconfig {}", path.display()))?;
    Ok(kube::Client::try_from(cfg)?)
}

/// Creates `obj`, or replaces what is there.
async fn ensure<K>(api: &Api<K>, obj: &K) -> anyhow::Result<()>
where
    K: Resource + Clone + Serialize + DeserializeOwned + Debug,
{
    let name = obj.name_any();
    match api.create(&PostParams::default(), obj).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => {
            let current = api.get(&name).await?;
            let mut new = obj.clone();
            new.meta_mut().resource_version = current.resource_version();
            api.replace(&name, &PostParams::default(), &new)
                .await
                .with_context(|| format!("cannot update {name}"))?;
            Ok(())
        }
        Err(e) => Err(e).with_context(|| format!("cannot create {name}")),
    }
}

async fn delete<K>(api: &Api<K>, name: &str) -> anyhow::Result<()>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot delete {name}")),
    }
}

fn objects(
    addr: IpAddr,
    port: u16,
) -> anyhow::Result<(Service, EndpointSlice, Endpoints, ClusterRoleBinding)> {
    let labels = json!({
        "k8s-app": "kube-dns",
        "kubernetes.io/cluster-service": "true",
        "kubernetes.io/name": "CoreDNS",
    });
    let node = crate::common::host::node_name();
    let svc = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": dns::SERVICE_NAME, "namespace": dns::SERVICE_NAMESPACE, "labels": labels},
        "spec": {
            "clusterIP": dns::SERVICE_IP,
            "clusterIPs": [dns::SERVICE_IP],
            "ports": [
                {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": port},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": port},
            ],
        },
    });
    let mut slice_labels = labels.clone();
    slice_labels["kubernetes.io/service-name"] = json!(dns::SERVICE_NAME);
    slice_labels["endpointslice.kubernetes.io/managed-by"] = json!(MANAGED_BY);
    let slice = json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": dns::SERVICE_NAME, "namespace": dns::SERVICE_NAMESPACE, "labels": slice_labels},
        "addressType": if addr.is_ipv4() { "IPv4" } else { "IPv6" },
        "endpoints": [{
            "addresses": [addr.to_string()],
            "conditions": {"ready": true, "serving": true, "terminating": false},
            "nodeName": node,
        }],
        "ports": [
            {"name": "dns", "port": port, "protocol": "UDP"},
            {"name": "dns-tcp", "port": port, "protocol": "TCP"},
        ],
    });
    let endpoints = json!({
        "apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": dns::SERVICE_NAME, "namespace": dns::SERVICE_NAMESPACE, "labels": labels},
        "subsets": [{
            "addresses": [{"ip": addr.to_string(), "nodeName": node}],
            "ports": [
                {"name": "dns", "port": port, "protocol": "UDP"},
                {"name": "dns-tcp", "port": port, "protocol": "TCP"},
            ],
        }],
    });
    let binding = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": BINDING, "labels": {"kubernetes.io/bootstrapping": "mk8s-dns-addon"}},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:kube-dns"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": DNS_USER}],
    });
    Ok((
        serde_json::from_value(svc)?,
        serde_json::from_value(slice)?,
        serde_json::from_value(endpoints)?,
        serde_json::from_value(binding)?,
    ))
}

/// Installs `args/dns` (kept if present) and creates the daemon's binding, Service and
/// endpoints.
pub fn enable(paths: &Paths) -> anyhow::Result<()> {
    let file = paths.data_file("args").join(dns::ARGS_FILE);
    if !file.exists() {
        crate::common::fsutil::write_atomic(
            &file,
            include_str!("../../templates/args/dns").as_bytes(),
            0o644,
        )
        .with_context(|| format!("cannot write {}", file.display()))?;
    }
    let config = dns::load_config(paths, &[])?;
    let mut addr = config.bind_address;
    if addr.is_unspecified() {
        addr = crate::common::host::primary_address();
    }
    let (svc, slice, endpoints, binding) = objects(addr, config.port)?;
    runtime()?.block_on(async {
        let client = admin_client(paths).await?;
        let ns = dns::SERVICE_NAMESPACE;
        ensure(&Api::<ClusterRoleBinding>::all(client.clone()), &binding).await?;
        ensure(&Api::<Service>::namespaced(client.clone(), ns), &svc).await?;
        ensure(
            &Api::<EndpointSlice>::namespaced(client.clone(), ns),
            &slice,
        )
        .await?;
        ensure(&Api::<Endpoints>::namespaced(client, ns), &endpoints).await?;
        println!(
            "Service {ns}/{} at {}:53 -> {addr}:{}",
            dns::SERVICE_NAME,
            dns::SERVICE_IP,
            config.port
        );
        Ok(())
    })
}

/// Deletes what [`enable`] created, but `args/dns` (the user's settings, as MicroK8s keeps
/// args files).
pub fn disable(paths: &Paths) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let client = admin_client(paths).await?;
        let ns = dns::SERVICE_NAMESPACE;
        delete(
            &Api::<Service>::namespaced(client.clone(), ns),
            dns::SERVICE_NAME,
        )
        .await?;
        delete(
            &Api::<EndpointSlice>::namespaced(client.clone(), ns),
            dns::SERVICE_NAME,
        )
        .await?;
        delete(
            &Api::<Endpoints>::namespaced(client.clone(), ns),
            dns::SERVICE_NAME,
        )
        .await?;
        delete(&Api::<ClusterRoleBinding>::all(client), BINDING).await?;
        Ok(())
    })
}
