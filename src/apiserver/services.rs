//! Service IP and NodePort allocation (upstream's service REST admission): a ClusterIP from
//! `--service-cluster-ip-range`, node ports from `--service-node-port-range`, 422 on conflicts.
//! Allocation reads the existing Services; the caller holds `State::service_alloc`.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use serde_json::{Value, json};

use super::registry::{decode_stored, meta_str};
use super::server::State;
use super::status::{ApiError, Cause};

fn invalid(obj: &Value, field: &str, message: String) -> ApiError {
    ApiError::invalid(
        "",
        "Service",
        meta_str(obj, "name"),
        vec![Cause {
            reason: "FieldValueInvalid".into(),
            message,
            field: field.into(),
        }],
    )
}

/// IPs and node ports held by other Services.
async fn in_use(
    state: &State,
    except_uid: &str,
) -> Result<(HashSet<Ipv4Addr>, HashSet<i64>), ApiError> {
    let page = state
        .storage
        .list("/registry/services/specs/", "", 0, 0)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let mut ips = HashSet::new();
    let mut ports = HashSet::new();
    for s in &page.items {
        // One unreadable Service must not block every other Service write.
        let Ok(svc) = decode_stored(s) else { continue };
        if meta_str(&svc, "uid") == except_uid {
            continue;
        }
        if let Some(ip) = svc["spec"]["clusterIP"]
            .as_str()
            .and_then(|i| i.parse().ok())
        {
            ips.insert(ip);
        }
        for p in svc["spec"]["ports"].as_array().into_iter().flatten() {
            if let Some(n) = p["nodePort"].as_i64() {
                ports.insert(n);
            }
        }
    }
    Ok((ips, ports))
}

pub async fn allocate(state: &State, obj: &mut Value, old: Option<&Value>) -> Result<(), ApiError> {
    let (net, bits) = state.config.service_cluster_ip_range;
    let (lo_port, hi_port) = state.config.service_node_port_range;
    let uid = meta_str(obj, "uid").to_string();
    let (used_ips, used_ports) = in_use(state, &uid).await?;
    let svc_type = obj["spec"]["type"]
        .as_str()
        .unwrap_or("ClusterIP")
        .to_string();
    let range = format!("{net}/{bits}");

    if svc_type == "ExternalName" {
        if let Some(spec) = obj["spec"].as_object_mut() {
            spec.remove("clusterIP");
            spec.remove("clusterIPs");
        }
    } else {
        let old_ip = old
            .and_then(|o| o["spec"]["clusterIP"].as_str())
            .unwrap_or("")
            .to_string();
        let mut ip = obj["spec"]["clusterIP"].as_str().unwrap_or("").to_string();
        if ip.is_empty() {
            ip = obj["spec"]["clusterIPs"][0]
                .as_str()
                .unwrap_or("")
                .to_string();
        }
        if !old_ip.is_empty() {
            if ip.is_empty() {
                ip = old_ip.clone();
            } else if ip != old_ip {
                return Err(invalid(
                    obj,
                    "spec.clusterIPs[0]",
                    format!("Invalid value: {ip:?}: may not change once set"),
                ));
            }
        } else if ip.is_empty() {
            ip = pick_ip(net, bits, &used_ips)
                .ok_or_else(|| {
                    ApiError::Internal(format!(
                        "failed to allocate a serviceIP: range is full ({range})"
                    ))
                })?
                .to_string();
        } else if ip != "None" {
            let parsed: Ipv4Addr = ip.parse().map_err(|_| {
                invalid(obj, "spec.clusterIPs[0]", format!("Invalid value: {ip:?}: must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"))
            })?;
            if !in_range(parsed, net, bits) {
                return Err(invalid(
                    obj,
                    "spec.clusterIPs",
                    format!(
                        "Invalid value: []string{{\"{ip}\"}}: failed to allocate IP {ip}: the provided IP ({ip}) is not in the valid range. The range of valid IPs is {range}"
                    ),
                ));
            }
            if used_ips.contains(&parsed) {
                return Err(invalid(
                    obj,
                    "spec.clusterIPs",
                    format!(
                        "Invalid value: []string{{\"{ip}\"}}: failed to allocate IP {ip}: provided IP is already allocated"
                    ),
                ));
            }
        }
        obj["spec"]["clusterIP"] = ip.clone().into();
        obj["spec"]["clusterIPs"] = json!([ip]);
        if ip != "None" || obj["spec"]["ipFamilies"].is_null() {
            obj["spec"]["ipFamilies"] = json!(["IPv4"]);
            obj["spec"]["ipFamilyPolicy"] = "SingleStack".into();
        }
    }

    let wants_node_ports = matches!(svc_type.as_str(), "NodePort" | "LoadBalancer");
    let mut taken = used_ports;
    let old_ports: Vec<Value> = old
        .and_then(|o| o["spec"]["ports"].as_array().cloned())
        .unwrap_or_default();
    if let Some(ports) = obj["spec"]["ports"].as_array_mut() {
        for (i, p) in ports.iter_mut().enumerate() {
            if !wants_node_ports {
                if let Some(m) = p.as_object_mut() {
                    m.remove("nodePort");
                }
                continue;
            }
            let requested = p["nodePort"].as_i64().unwrap_or(0);
            let kept = old_ports
                .iter()
                .find(|o| o["port"] == p["port"] && o["protocol"] == p["protocol"])
                .and_then(|o| o["nodePort"].as_i64());
            let n = if requested != 0 {
                if requested < lo_port as i64 || requested > hi_port as i64 {
                    return Err(ApiError::invalid(
                        "",
                        "Service",
                        "",
                        vec![Cause {
                            reason: "FieldValueInvalid".into(),
                            message: format!(
                                "Invalid value: {requested}: provided port is not in the valid range. The range of valid ports is {lo_port}-{hi_port}"
                            ),
                            field: format!("spec.ports[{i}].nodePort"),
                        }],
                    ));
                }
                if taken.contains(&requested) && kept != Some(requested) {
                    return Err(ApiError::invalid(
                        "",
                        "Service",
                        "",
                        vec![Cause {
                            reason: "FieldValueInvalid".into(),
                            message: format!(
                                "Invalid value: {requested}: provided port is already allocated"
                            ),
                            field: format!("spec.ports[{i}].nodePort"),
                        }],
                    ));
                }
                requested
            } else if let Some(k) = kept {
                k
            } else {
                pick_port(lo_port, hi_port, &taken).ok_or_else(|| {
                    ApiError::Internal(format!(
                        "failed to allocate a nodePort: range is full ({lo_port}-{hi_port})"
                    ))
                })?
            };
            taken.insert(n);
            p["nodePort"] = n.into();
        }
    }
    if wants_node_ports && obj["spec"]["externalTrafficPolicy"].is_null() {
        obj["spec"]["externalTrafficPolicy"] = "Cluster".into();
    }
    Ok(())
}

fn in_range(ip: Ipv4Addr, net: Ipv4Addr, bits: u8) -> bool {
    let mask = u32::MAX << (32 - bits);
    let first = u32::from(net);
    let last = first | !mask;
    let v = u32::from(ip);
    (u32::from(ip) & mask) == first && v != first && v != last
}

/// A free IP, scanning from a random point as upstream's allocator does.
fn pick_ip(net: Ipv4Addr, bits: u8, used: &HashSet<Ipv4Addr>) -> Option<Ipv4Addr> {
    let size = 1u32 << (32 - bits);
    let base = u32::from(net);
    // .1 is the `kubernetes` Service's, the first and last are not hosts.
    let usable = size.checked_sub(3)?;
    if usable == 0 {
        return None;
    }
    let start = rand::random_range(0..usable);
    (0..usable)
        .map(|i| Ipv4Addr::from(base + 2 + (start + i) % usable))
        .find(|ip| !used.contains(ip))
}

fn pick_port(lo: u16, hi: u16, used: &HashSet<i64>) -> Option<i64> {
    let span = (hi - lo) as i64 + 1;
    let start = rand::random_range(0..span);
    (0..span)
        .map(|i| lo as i64 + (start + i) % span)
        .find(|p| !used.contains(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ips_come_from_the_range_and_skip_used_ones() {
        let net = Ipv4Addr::new(10, 152, 183, 0);
        let mut used = HashSet::new();
        for _ in 0..253 {
            let ip = pick_ip(net, 24, &used).unwrap();
            assert!(in_range(ip, net, 24));
            assert_ne!(ip, Ipv4Addr::new(10, 152, 183, 1));
            assert!(used.insert(ip));
        }
        assert!(pick_ip(net, 24, &used).is_none());
        assert!(!in_range(Ipv4Addr::new(10, 0, 0, 5), net, 24));
    }
}
