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

/// Every address of the host, as `hostname -I` lists them, less link-local addresses and the
/// addresses of CNI devices; IPv4 first, each once, in interface order.
pub fn host_addresses() -> Vec<IpAddr> {
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
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
        if !is_host_address(&ip) {
            continue;
        }
        let list = if ip.is_ipv4() { &mut v4 } else { &mut v6 };
        if !list.contains(&ip) {
            list.push(ip);
        }
    }
    v4.extend(v6);
    v4
}

/// The address `mk8s config` puts in the kubeconfig: the first host IPv4 address, else the
/// first IPv6 one, else loopback.
pub fn primary_address() -> IpAddr {
    host_addresses()
        .into_iter()
        .next()
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
    fn cni_devices_are_recognised() {
        assert!(is_cni_interface("mk8sbr0"));
        assert!(is_cni_interface("cni0"));
        assert!(is_cni_interface("vxlan.calico"));
        assert!(!is_cni_interface("eth0"));
        assert!(!is_cni_interface("enp3s0"));
    }
}
