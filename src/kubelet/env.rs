//! A container's environment as upstream's kubelet builds it: service links, `envFrom`, then
//! `env` (later wins), `$(VAR)` expansion, and `valueFrom` (fieldRef, resourceFieldRef,
//! configMapKeyRef, secretKeyRef). Reads configMaps, secrets and services; writes nothing.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret, Service};
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};

/// What a pod's environment may refer to besides the API objects.
pub struct EnvContext<'a> {
    pub pod: &'a Pod,
    pub host_ip: String,
    pub pod_ips: Vec<String>,
    /// The node's allocatable cpu (cores) and memory (bytes), for limits that are not set.
    pub node_cpu: f64,
    pub node_memory: f64,
}

/// Upstream's `$(VAR)` expansion: `$$` is a literal `$`, an undefined reference stays as is.
pub fn expand(input: &str, vars: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(input.len());
    let b = input.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'$' && i + 1 < b.len() {
            if b[i + 1] == b'$' {
                out.push('$');
                i += 2;
                continue;
            }
            if b[i + 1] == b'('
                && let Some(close) = input[i + 2..].find(')')
            {
                let name = &input[i + 2..i + 2 + close];
                match vars(name) {
                    Some(v) => out.push_str(&v),
                    None => out.push_str(&input[i..i + 3 + close]),
                }
                i += 3 + close;
                continue;
            }
        }
        let ch = input[i..].chars().next().unwrap_or('$');
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

/// `metadata.name`, `status.podIP`, `metadata.labels['x']`… as the downward API resolves them.
pub fn field_ref(ctx: &EnvContext<'_>, path: &str) -> Result<String, String> {
    let pod = ctx.pod;
    let spec = pod.spec.clone().unwrap_or_default();
    let bracket = |prefix: &str| -> Option<String> {
        path.strip_prefix(prefix)?
            .strip_prefix("['")?
            .strip_suffix("']")
            .map(str::to_string)
    };
    if let Some(k) = bracket("metadata.labels") {
        return Ok(pod.labels().get(&k).cloned().unwrap_or_default());
    }
    if let Some(k) = bracket("metadata.annotations") {
        return Ok(pod.annotations().get(&k).cloned().unwrap_or_default());
    }
    let kv = |m: &BTreeMap<String, String>| {
        m.iter()
            .map(|(k, v)| format!("{k}={v:?}"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    Ok(match path {
        "metadata.name" => pod.name_any(),
        "metadata.namespace" => pod.namespace().unwrap_or_default(),
        "metadata.uid" => pod.uid().unwrap_or_default(),
        "metadata.labels" => kv(pod.labels()),
        "metadata.annotations" => kv(pod.annotations()),
        "spec.nodeName" => spec.node_name.unwrap_or_default(),
        "spec.serviceAccountName" => spec.service_account_name.unwrap_or_default(),
        "status.hostIP" => ctx.host_ip.clone(),
        "status.hostIPs" => ctx.host_ip.clone(),
        "status.podIP" => ctx.pod_ips.first().cloned().unwrap_or_default(),
        "status.podIPs" => ctx.pod_ips.join(","),
        other => return Err(format!("unsupported fieldPath: {other}")),
    })
}

/// `limits.cpu` and friends with their divisor, rounded up as upstream does; an unset limit
/// is the node's allocatable.
pub fn resource_ref(
    ctx: &EnvContext<'_>,
    container: &Container,
    resource: &str,
    divisor: Option<&str>,
) -> Result<String, String> {
    let res = container.resources.clone().unwrap_or_default();
    let (map, name) = match resource.split_once('.') {
        Some(("limits", n)) => (res.limits.unwrap_or_default(), n),
        Some(("requests", n)) => (res.requests.unwrap_or_default(), n),
        _ => return Err(format!("unsupported container resource: {resource}")),
    };
    let fallback = match name {
        "cpu" => ctx.node_cpu,
        "memory" => ctx.node_memory,
        _ => 0.0,
    };
    let value = map
        .get(name)
        .and_then(|q| crate::common::quantity::parse(&q.0))
        .unwrap_or(if resource.starts_with("limits") {
            fallback
        } else {
            0.0
        });
    let div = divisor
        .and_then(crate::common::quantity::parse)
        .filter(|d| *d > 0.0)
        .unwrap_or(1.0);
    Ok(format!("{}", (value / div).ceil() as i64))
}

/// Upstream's service link variables (`WEB_SERVICE_HOST`, `WEB_PORT_80_TCP_ADDR`, …) for the
/// services of the pod's namespace, plus the master service of `default`.
fn service_vars(services: &[Service], out: &mut Vec<(String, String)>) {
    for svc in services {
        let spec = svc.spec.clone().unwrap_or_default();
        let ip = spec.cluster_ip.unwrap_or_default();
        if ip.is_empty() || ip == "None" {
            continue;
        }
        let name = svc.name_any().to_uppercase().replace('-', "_");
        let ports = spec.ports.unwrap_or_default();
        let Some(first) = ports.first() else { continue };
        out.push((format!("{name}_SERVICE_HOST"), ip.clone()));
        out.push((format!("{name}_SERVICE_PORT"), first.port.to_string()));
        for p in &ports {
            if let Some(pn) = &p.name {
                out.push((
                    format!(
                        "{name}_SERVICE_PORT_{}",
                        pn.to_uppercase().replace('-', "_")
                    ),
                    p.port.to_string(),
                ));
            }
        }
        let proto = first.protocol.clone().unwrap_or_else(|| "TCP".into());
        out.push((
            format!("{name}_PORT"),
            format!("{}://{ip}:{}", proto.to_lowercase(), first.port),
        ));
        for p in &ports {
            let proto = p.protocol.clone().unwrap_or_else(|| "TCP".into());
            let prefix = format!("{name}_PORT_{}_{}", p.port, proto.to_uppercase());
            out.push((
                prefix.clone(),
                format!("{}://{ip}:{}", proto.to_lowercase(), p.port),
            ));
            out.push((format!("{prefix}_PROTO"), proto.to_lowercase()));
            out.push((format!("{prefix}_PORT"), p.port.to_string()));
            out.push((format!("{prefix}_ADDR"), ip.clone()));
        }
    }
}

/// The container's environment, in upstream's order; an error is the message upstream shows
/// in `CreateContainerConfigError`.
pub async fn container_env(
    client: &Client,
    ctx: &EnvContext<'_>,
    container: &Container,
) -> Result<Vec<(String, String)>, String> {
    let ns = ctx.pod.namespace().unwrap_or_default();
    let spec = ctx.pod.spec.clone().unwrap_or_default();
    let mut vars: Vec<(String, String)> = Vec::new();
    if spec.enable_service_links.unwrap_or(true) {
        let list = Api::<Service>::namespaced(client.clone(), &ns)
            .list(&ListParams::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default();
        service_vars(&list, &mut vars);
    }
    if ns != "default"
        && let Ok(Some(k)) = Api::<Service>::namespaced(client.clone(), "default")
            .get_opt("kubernetes")
            .await
    {
        service_vars(&[k], &mut vars);
    }
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    for from in container.env_from.clone().unwrap_or_default() {
        let prefix = from.prefix.clone().unwrap_or_default();
        if let Some(r) = &from.config_map_ref {
            match cms.get_opt(&r.name).await.map_err(|e| e.to_string())? {
                Some(cm) => {
                    for (k, v) in cm.data.unwrap_or_default() {
                        vars.push((format!("{prefix}{k}"), v));
                    }
                }
                None if r.optional == Some(true) => {}
                None => return Err(format!("configmap \"{}\" not found", r.name)),
            }
        }
        if let Some(r) = &from.secret_ref {
            match secrets.get_opt(&r.name).await.map_err(|e| e.to_string())? {
                Some(s) => {
                    for (k, v) in s.data.unwrap_or_default() {
                        vars.push((
                            format!("{prefix}{k}"),
                            String::from_utf8_lossy(&v.0).into_owned(),
                        ));
                    }
                }
                None if r.optional == Some(true) => {}
                None => return Err(format!("secret \"{}\" not found", r.name)),
            }
        }
    }
    for e in container.env.clone().unwrap_or_default() {
        let value = if let Some(src) = &e.value_from {
            if let Some(f) = &src.field_ref {
                field_ref(ctx, &f.field_path)?
            } else if let Some(r) = &src.resource_field_ref {
                let c = match &r.container_name {
                    Some(n) if !n.is_empty() => spec
                        .containers
                        .iter()
                        .chain(spec.init_containers.iter().flatten())
                        .find(|c| &c.name == n)
                        .cloned()
                        .unwrap_or_else(|| container.clone()),
                    _ => container.clone(),
                };
                resource_ref(
                    ctx,
                    &c,
                    &r.resource,
                    r.divisor.as_ref().map(|d| d.0.as_str()),
                )?
            } else if let Some(r) = &src.config_map_key_ref {
                match cms.get_opt(&r.name).await.map_err(|e| e.to_string())? {
                    Some(cm) => match cm.data.unwrap_or_default().get(&r.key) {
                        Some(v) => v.clone(),
                        None if r.optional == Some(true) => continue,
                        None => {
                            return Err(format!(
                                "couldn't find key {} in ConfigMap {ns}/{}",
                                r.key, r.name
                            ));
                        }
                    },
                    None if r.optional == Some(true) => continue,
                    None => return Err(format!("configmap \"{}\" not found", r.name)),
                }
            } else if let Some(r) = &src.secret_key_ref {
                match secrets.get_opt(&r.name).await.map_err(|e| e.to_string())? {
                    Some(s) => match s.data.unwrap_or_default().get(&r.key) {
                        Some(v) => String::from_utf8_lossy(&v.0).into_owned(),
                        None if r.optional == Some(true) => continue,
                        None => {
                            return Err(format!(
                                "couldn't find key {} in Secret {ns}/{}",
                                r.key, r.name
                            ));
                        }
                    },
                    None if r.optional == Some(true) => continue,
                    None => return Err(format!("secret \"{}\" not found", r.name)),
                }
            } else {
                String::new()
            }
        } else {
            let defined: BTreeMap<String, String> = vars.iter().cloned().collect();
            expand(&e.value.clone().unwrap_or_default(), &|n| {
                defined.get(n).cloned()
            })
        };
        vars.push((e.name.clone(), value));
    }
    // Later definitions win; keep the first position of each name, as a Go map-backed list.
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut out: Vec<(String, String)> = Vec::new();
    for (k, v) in vars {
        match seen.get(&k) {
            Some(&i) => out[i].1 = v,
            None => {
                seen.insert(k.clone(), out.len());
                out.push((k, v));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::expand;

    #[test]
    fn expansion_as_upstream() {
        let vars = |n: &str| (n == "A").then(|| "x".to_string());
        assert_eq!(expand("$(A)-$(B)-$$(A)-$", &vars), "x-$(B)-$(A)-$");
        assert_eq!(expand("plain é", &vars), "plain é");
    }
}
