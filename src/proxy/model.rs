//! From API objects to [`ServicePort`]s: which services the proxy serves and which endpoints
//! each port may send traffic to. Pure, so every rule of upstream's endpoint selection is a
//! unit test.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::rules::{Cidr, Endpoint, Protocol, ServicePort};

/// The label that ties an EndpointSlice to its Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Upstream's `sessionAffinityConfig.clientIP.timeoutSeconds` default (3 h).
const DEFAULT_AFFINITY_TIMEOUT: u32 = 10800;

/// Every port of every service the proxy programs, sorted by namespace, name and port.
/// Skipped: headless and ExternalName services, non-IPv4 cluster IPs, cluster IPs outside
/// `range` (another proxy's), protocols other than TCP/UDP/SCTP.
pub fn service_ports(
    services: &[Service],
    slices: &[EndpointSlice],
    node: &str,
    range: Option<Cidr>,
) -> Vec<ServicePort> {
    let mut by_service: BTreeMap<(String, String), Vec<&EndpointSlice>> = BTreeMap::new();
    for s in slices {
        let Some(name) = s
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
        else {
            continue;
        };
        if s.address_type != "IPv4" {
            continue;
        }
        let ns = s.metadata.namespace.clone().unwrap_or_default();
        by_service.entry((ns, name.clone())).or_default().push(s);
    }

    let mut out = Vec::new();
    for svc in services {
        let (Some(spec), Some(name)) = (&svc.spec, &svc.metadata.name) else {
            continue;
        };
        let ns = svc.metadata.namespace.clone().unwrap_or_default();
        if spec.type_.as_deref() == Some("ExternalName") {
            continue;
        }
        let Some(cluster_ip) = spec
            .cluster_ip
            .as_deref()
            .and_then(|ip| ip.parse::<Ipv4Addr>().ok())
        else {
            continue; // headless ("None"), unset, or IPv6
        };
        if range.is_some_and(|r| !r.contains(cluster_ip)) {
            continue;
        }
        let external_ips: Vec<Ipv4Addr> = spec
            .external_ips
            .iter()
            .flatten()
            .map(String::as_str)
            .chain(
                svc.status
                    .as_ref()
                    .and_then(|s| s.load_balancer.as_ref())
                    .and_then(|lb| lb.ingress.as_ref())
                    .into_iter()
                    .flatten()
                    .filter_map(|i| i.ip.as_deref()),
            )
            .filter_map(|ip| ip.parse().ok())
            .collect();
        let affinity_timeout = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
            spec.session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds)
                .and_then(|t| u32::try_from(t).ok())
                .filter(|t| *t > 0)
                .unwrap_or(DEFAULT_AFFINITY_TIMEOUT)
        });
        let node_ports_wanted = matches!(spec.type_.as_deref(), Some("NodePort" | "LoadBalancer"));
        let slices = by_service
            .get(&(ns.clone(), name.clone()))
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        for p in spec.ports.iter().flatten() {
            let Some(protocol) = Protocol::parse(p.protocol.as_deref().unwrap_or("TCP")) else {
                continue;
            };
            let Ok(port) = u16::try_from(p.port) else {
                continue;
            };
            let port_name = p.name.clone().unwrap_or_default();
            out.push(ServicePort {
                namespace: ns.clone(),
                name: name.clone(),
                port_name: port_name.clone(),
                protocol,
                cluster_ip,
                port,
                node_port: p
                    .node_port
                    .filter(|_| node_ports_wanted)
                    .and_then(|n| u16::try_from(n).ok())
                    .filter(|n| *n > 0),
                external_ips: external_ips.clone(),
                affinity_timeout,
                external_local: spec.external_traffic_policy.as_deref() == Some("Local")
                    && (node_ports_wanted || !external_ips.is_empty()),
                internal_local: spec.internal_traffic_policy.as_deref() == Some("Local"),
                endpoints: endpoints(slices, &port_name, protocol, node),
            });
        }
    }
    out.sort_by(|a, b| {
        (&a.namespace, &a.name, &a.port_name, a.protocol).cmp(&(
            &b.namespace,
            &b.name,
            &b.port_name,
            b.protocol,
        ))
    });
    out
}

/// The endpoints of one service port: the ready ones; when none is ready, the ones still
/// serving while terminating (upstream's `CategorizeEndpoints`, so a rolling update drains
/// instead of refusing). Each address once.
fn endpoints(
    slices: &[&EndpointSlice],
    port_name: &str,
    proto: Protocol,
    node: &str,
) -> Vec<Endpoint> {
    let mut ready = Vec::new();
    let mut terminating = Vec::new();
    for s in slices {
        let Some(port) = s.ports.iter().flatten().find_map(|p| {
            let same_name = p.name.as_deref().unwrap_or("") == port_name;
            let same_proto = Protocol::parse(p.protocol.as_deref().unwrap_or("TCP")) == Some(proto);
            (same_name && same_proto)
                .then_some(p.port)
                .flatten()
                .and_then(|n| u16::try_from(n).ok())
        }) else {
            continue;
        };
        for e in &s.endpoints {
            let Some(ip) = e.addresses.first().and_then(|a| a.parse::<Ipv4Addr>().ok()) else {
                continue;
            };
            let c = e.conditions.as_ref();
            // Unset conditions mean "unknown", which upstream takes as ready/serving.
            let is_ready = c.and_then(|c| c.ready).unwrap_or(true);
            let serving = c.and_then(|c| c.serving).unwrap_or(is_ready);
            let is_terminating = c.and_then(|c| c.terminating).unwrap_or(false);
            let ep = Endpoint {
                ip,
                port,
                local: e.node_name.as_deref() == Some(node),
            };
            if is_ready && !is_terminating {
                ready.push(ep);
            } else if serving && is_terminating {
                terminating.push(ep);
            }
        }
    }
    let mut chosen = if ready.is_empty() { terminating } else { ready };
    chosen.sort();
    chosen.dedup_by(|a, b| a.ip == b.ip && a.port == b.port);
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(v: serde_json::Value) -> Service {
        serde_json::from_value(v).unwrap()
    }

    fn slice(v: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(v).unwrap()
    }

    fn web() -> Service {
        svc(serde_json::json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"type": "NodePort", "clusterIP": "10.152.183.20",
                     "ports": [{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080},
                               {"name": "dns", "port": 53, "protocol": "UDP"}],
                     "sessionAffinity": "ClientIP", "externalTrafficPolicy": "Local"}
        }))
    }

    fn web_slice(endpoints: serde_json::Value) -> EndpointSlice {
        slice(serde_json::json!({
            "metadata": {"name": "web-abc", "namespace": "default",
                         "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": endpoints
        }))
    }

    #[test]
    fn ready_endpoints_of_the_matching_port() {
        let s = web_slice(serde_json::json!([
            {"addresses": ["10.1.0.5"], "conditions": {"ready": true}, "nodeName": "n1"},
            {"addresses": ["10.1.0.6"], "nodeName": "n2"},
            {"addresses": ["10.1.0.7"], "conditions": {"ready": false, "serving": false}},
            {"addresses": ["10.1.0.8"], "conditions": {"ready": false, "serving": true, "terminating": true}}
        ]));
        let ports = service_ports(&[web()], &[s], "n1", "10.152.183.0/24".parse().ok());
        assert_eq!(ports.len(), 2);
        let dns = &ports[0];
        assert_eq!(
            (dns.port_name.as_str(), dns.protocol),
            ("dns", Protocol::Udp)
        );
        assert!(dns.endpoints.is_empty(), "the slice has no dns port");
        assert_eq!(dns.node_port, None);
        let http = &ports[1];
        assert_eq!(http.node_port, Some(30080));
        assert_eq!(http.affinity_timeout, Some(10800));
        assert!(http.external_local && !http.internal_local);
        let eps: Vec<(String, bool)> = http
            .endpoints
            .iter()
            .map(|e| (format!("{}:{}", e.ip, e.port), e.local))
            .collect();
        assert_eq!(
            eps,
            [
                ("10.1.0.5:8080".to_string(), true),
                ("10.1.0.6:8080".to_string(), false)
            ]
        );
    }

    #[test]
    fn terminating_endpoints_serve_only_when_none_is_ready() {
        let s = web_slice(serde_json::json!([
            {"addresses": ["10.1.0.7"], "conditions": {"ready": false, "serving": false, "terminating": true}},
            {"addresses": ["10.1.0.8"], "conditions": {"ready": false, "serving": true, "terminating": true}}
        ]));
        let ports = service_ports(&[web()], &[s], "n1", None);
        let ips: Vec<String> = ports[1]
            .endpoints
            .iter()
            .map(|e| e.ip.to_string())
            .collect();
        assert_eq!(ips, ["10.1.0.8"]);
    }

    #[test]
    fn skips_what_is_not_this_proxys() {
        let headless = svc(serde_json::json!({
            "metadata": {"name": "h", "namespace": "default"},
            "spec": {"clusterIP": "None", "ports": [{"port": 80}]}
        }));
        let external = svc(serde_json::json!({
            "metadata": {"name": "x", "namespace": "default"},
            "spec": {"type": "ExternalName", "externalName": "example.org"}
        }));
        let elsewhere = svc(serde_json::json!({
            "metadata": {"name": "o", "namespace": "default"},
            "spec": {"clusterIP": "10.152.184.9", "ports": [{"port": 80}]}
        }));
        let v6 = svc(serde_json::json!({
            "metadata": {"name": "v6", "namespace": "default"},
            "spec": {"clusterIP": "fd00::1", "ports": [{"port": 80}]}
        }));
        let ports = service_ports(
            &[headless, external, elsewhere.clone(), v6],
            &[],
            "n1",
            "10.152.183.0/24".parse().ok(),
        );
        assert!(ports.is_empty(), "{ports:?}");
        // Without a range every IPv4 cluster IP is served; a ClusterIP service never gets
        // its (absent) NodePort nor the Local external policy.
        let ports = service_ports(&[elsewhere], &[], "n1", None);
        assert_eq!(ports.len(), 1);
        assert_eq!(ports[0].protocol, Protocol::Tcp);
        assert!(!ports[0].external_local && ports[0].node_port.is_none());
    }
}
