//! Facts about this machine that certificates and kubeconfigs need: node name and addresses.

use std::net::IpAddr;

/// Interface name prefixes of CNI and overlay devices, whose addresses are not the host's.
const CNI_INTERFACE_PREFIXES: &[&str] = &[
    "mk8sbr",
    "cni",
    "cbr0",
    "flannel",
    "vxlan",
    "cali",
    "veth",
    "tunl",
    "kube-ipvs",
    "lxc",
];

/// The node name: the hostname, lower-cased as Kubernetes object names must be.
pub fn node_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .map(|h| h.trim().to_ascii_lowercase())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// Whether an address belongs in a certificate as one of the host's: not loopback, not
/// link-local, not unspecified or multicast.
pub fn is_host_address(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            !(v4.is_loopback() || v4.is_link_local() || v4.is_unspecified() || v4.is_multicast())
        }
        IpAddr::V6(v6) => {
            let link_local = (v6.segments()[0] & 0xffc0) == 0xfe80;
            !(v6.is_loopback() || link_local || v6.is_unspecified() || v6.is_multicast())
        }
    }
}

/// Whether an interface is a CNI bridge, veth or overlay device of a pod network.
pub fn is_cni_interface(name: &str) -> bool {
    CNI_INTERFACE_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// Host addresses by interface, less link-local and CNI ones, in interface order.
fn interface_addresses() -> Vec<(String, IpAddr)> {
    let mut out: Vec<(String, IpAddr)> = Vec::new();
    let addrs = match nix::ifaddrs::getifaddrs() {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list network interfaces");
            return out;
        }
    };
    for ifa in addrs {
        if is_cni_interface(&ifa.interface_name) {
            continue;
        }
        let Some(sa) = ifa.address else { continue };
        let ip = if let Some(s) = sa.as_sockaddr_in() {
            IpAddr::V4(s.ip())
        } else if let Some(s) = sa.as_sockaddr_in6() {
            IpAddr::V6(s.ip())
        } else {
            continue;
        };
        if is_host_address(&ip) && !out.iter().any(|(_, known)| *known == ip) {
            out.push((ifa.interface_name, ip));
        }
    }
    out
}

/// Every address of the host, as `hostname -I` lists them, less link-local addresses and the
/// addresses of CNI devices; IPv4 first, each once, in interface order.
pub fn host_addresses() -> Vec<IpAddr> {
    let all = interface_addresses();
    let v4 = all.iter().filter(|(_, ip)| ip.is_ipv4()).map(|(_, ip)| *ip);
    let v6 = all.iter().filter(|(_, ip)| ip.is_ipv6()).map(|(_, ip)| *ip);
    v4.chain(v6).collect()
}

/// The interface of the IPv4 default route, from `/proc/net/route` (a table read, no traffic).
fn default_route_interface() -> Option<String> {
    let table = std::fs::read_to_string("/proc/net/route").ok()?;
    default_route_in(&table)
}

fn default_route_in(table: &str) -> Option<String> {
    table.lines().skip(1).find_map(|line| {
        let mut cols = line.split_whitespace();
        let iface = cols.next()?;
        let destination = cols.next()?;
        (destination == "00000000").then(|| iface.to_string())
    })
}

/// The address `mk8s config` puts in the kubeconfig, as MicroK8s picks it: the IPv4 address
/// of the default-route interface, else the first host address, else loopback.
pub fn primary_address() -> IpAddr {
    let all = interface_addresses();
    let by_route = default_route_interface().and_then(|iface| {
        all.iter()
            .find(|(name, ip)| *name == iface && ip.is_ipv4())
            .map(|(_, ip)| *ip)
    });
    by_route
        .or_else(|| host_addresses().into_iter().next())
        .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_local_and_loopback_are_not_host_addresses() {
        for bad in ["127.0.0.1", "169.254.3.4", "::1", "fe80::1", "0.0.0.0"] {
            assert!(!is_host_address(&bad.parse().unwrap()), "{bad}");
        }
        for good in ["192.0.2.2", "10.0.0.5", "fd00::2", "2001:db8::1"] {
            assert!(is_host_address(&good.parse().unwrap()), "{good}");
        }
    }

    #[test]
    fn default_route_is_read_from_the_route_table() {
        let table = "Iface\tDestination\tGateway\tFlags\n\
                     eth1\t0002000A\t00000000\t0001\n\
                     eth0\t00000000\t010200C0\t0003\n";
        assert_eq!(default_route_in(table).as_deref(), Some("eth0"));
        assert_eq!(default_route_in("Iface\tDestination\n"), None);
    }

    #[test]
    fn cni_devices_are_recognised() {
        assert!(is_cni_interface("mk8sbr0"));
        assert!(is_cni_interface("cni0"));
        assert!(is_cni_interface("vxlan.calico"));
        assert!(!is_cni_interface("eth0"));
        assert!(!is_cni_interface("enp3s0"));
    }
}
