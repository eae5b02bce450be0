//! The cluster zone as the Kubernetes DNS-Based Service Discovery specification names it, built
//! from Services and EndpointSlices: an immutable [`Index`] answering one question at a time.
//!
//! Names: `<svc>.<ns>.svc.<zone>` (A/AAAA of the ClusterIPs, or of the ready endpoints of a
//! headless Service; CNAME of an ExternalName), `<host>.<svc>.<ns>.svc.<zone>` for each ready
//! endpoint of a headless Service (its hostname, else its dashed address, as CoreDNS names it),
//! `_<port>._<proto>.<svc>.<ns>.svc.<zone>` SRV, `<a>-<b>-<c>-<d>.<ns>.pod.<zone>` (CoreDNS's
//! `pods insecure`), PTR under `in-addr.arpa`/`ip6.arpa`, and SOA/NS at the apex. A name that
//! exists without the asked type is NODATA (NOERROR, SOA in authority), any other NXDOMAIN.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use hickory_server::proto::op::ResponseCode;
use hickory_server::proto::rr::rdata::{A, AAAA, CNAME, NS, PTR, SOA, SRV};
use hickory_server::proto::rr::{Name, RData, Record, RecordType};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// The label naming an EndpointSlice's Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// CoreDNS's SOA timers for the cluster zone (refresh, retry, expire).
const SOA_REFRESH: i32 = 7200;
const SOA_RETRY: i32 = 1800;
const SOA_EXPIRE: i32 = 86400;

/// A port as SRV names it: `_<name>._<protocol>`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Port {
    name: String,
    /// Lower case, as in the SRV name.
    protocol: String,
    port: u16,
}

#[derive(Debug, Clone)]
struct Endpoint {
    ip: IpAddr,
    /// Its label under the Service: the slice's hostname, else the dashed address.
    label: String,
    ports: Vec<Port>,
}

#[derive(Debug, Clone)]
enum Kind {
    ClusterIp(Vec<IpAddr>),
    Headless,
    ExternalName(String),
}

#[derive(Debug, Clone)]
struct Svc {
    kind: Kind,
    ports: Vec<Port>,
    endpoints: Vec<Endpoint>,
}

/// What the index says about a question.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup {
    /// An authoritative answer (NOERROR with records, NODATA or NXDOMAIN).
    Answer(Answer),
    /// Not a name of ours: forward it.
    NotOurs,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub rcode: ResponseCode,
    pub answers: Vec<Record>,
    /// The SOA, for NODATA and NXDOMAIN (negative caching, RFC 2308).
    pub authorities: Vec<Record>,
    pub additionals: Vec<Record>,
}

/// One snapshot of the zone.
#[derive(Debug, Clone)]
pub struct Index {
    /// Lower case, no trailing dot: `cluster.local`.
    zone: String,
    ttl: u32,
    serial: u32,
    /// (namespace, name) → Service.
    services: BTreeMap<(String, String), Svc>,
    namespaces: BTreeSet<String>,
    /// Address → the names it is the address of (for PTR).
    reverse: HashMap<IpAddr, Vec<String>>,
    /// The DNS server's own Service addresses, for `ns.dns.<zone>`.
    dns_service: (String, String),
}

/// Names need their trailing dot; the labels come from validated Kubernetes names.
fn fqdn(name: &str) -> Option<Name> {
    Name::from_ascii(format!("{}.", name.trim_end_matches('.'))).ok()
}

/// An address as a DNS label, as CoreDNS writes it (`10-1-0-7`, `fd00--2`).
pub fn dashed(ip: &IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string().replace('.', "-"),
        IpAddr::V6(v6) => v6.to_string().replace(':', "-"),
    }
}

fn parse_dashed(label: &str) -> Option<IpAddr> {
    label
        .replace('-', ".")
        .parse::<std::net::Ipv4Addr>()
        .map(IpAddr::V4)
        .ok()
        .or_else(|| label.replace('-', ":").parse().ok().map(IpAddr::V6))
}

/// The address a reverse name (`4.3.2.1.in-addr.arpa`, nibbles `.ip6.arpa`) stands for.
fn reverse_ip(labels: &[&str]) -> Option<IpAddr> {
    match labels {
        [d, c, b, a, "in-addr", "arpa"] => {
            let octet = |s: &str| s.parse::<u8>().ok();
            Some(IpAddr::from([octet(a)?, octet(b)?, octet(c)?, octet(d)?]))
        }
        [nibbles @ .., "ip6", "arpa"] if nibbles.len() == 32 => {
            let mut v: u128 = 0;
            for n in nibbles.iter().rev() {
                if n.len() != 1 {
                    return None;
                }
                v = (v << 4) | u128::from(u8::from_str_radix(n, 16).ok()?);
            }
            Some(IpAddr::from(v.to_be_bytes()))
        }
        _ => None,
    }
}

fn address_record(name: &Name, ttl: u32, ip: IpAddr) -> Record {
    let rdata = match ip {
        IpAddr::V4(v4) => RData::A(A(v4)),
        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
    };
    Record::from_rdata(name.clone(), ttl, rdata)
}

fn matches_type(ip: &IpAddr, qtype: RecordType) -> bool {
    match qtype {
        RecordType::A => ip.is_ipv4(),
        RecordType::AAAA => ip.is_ipv6(),
        RecordType::ANY => true,
        _ => false,
    }
}

fn slice_ports(s: &EndpointSlice) -> Vec<Port> {
    s.ports
        .iter()
        .flatten()
        .filter_map(|p| {
            Some(Port {
                name: p.name.clone().unwrap_or_default(),
                protocol: p.protocol.as_deref().unwrap_or("TCP").to_ascii_lowercase(),
                port: u16::try_from(p.port?).ok()?,
            })
        })
        .collect()
}

impl Index {
    /// The zone from the current Services and EndpointSlices.
    pub fn build(
        zone: &str,
        ttl: u32,
        serial: u32,
        dns_service: (&str, &str),
        services: &[impl AsRef<Service>],
        slices: &[impl AsRef<EndpointSlice>],
    ) -> Self {
        let mut idx = Index {
            zone: zone.trim_end_matches('.').to_ascii_lowercase(),
            ttl,
            serial,
            services: BTreeMap::new(),
            namespaces: BTreeSet::new(),
            reverse: HashMap::new(),
            dns_service: (dns_service.0.to_string(), dns_service.1.to_string()),
        };
        for s in services {
            let s = s.as_ref();
            let (Some(ns), Some(name), Some(spec)) =
                (&s.metadata.namespace, &s.metadata.name, &s.spec)
            else {
                continue;
            };
            if s.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let kind = if spec.type_.as_deref() == Some("ExternalName") {
                match &spec.external_name {
                    Some(n) if !n.is_empty() => Kind::ExternalName(n.to_ascii_lowercase()),
                    _ => continue,
                }
            } else {
                let ips: Vec<IpAddr> = spec
                    .cluster_ips
                    .iter()
                    .flatten()
                    .chain(spec.cluster_ip.iter())
                    .filter_map(|ip| ip.parse().ok())
                    .fold(Vec::new(), |mut v, ip| {
                        if !v.contains(&ip) {
                            v.push(ip);
                        }
                        v
                    });
                match spec.cluster_ip.as_deref() {
                    Some("None") => Kind::Headless,
                    _ if ips.is_empty() => continue,
                    _ => Kind::ClusterIp(ips),
                }
            };
            let ports = spec
                .ports
                .iter()
                .flatten()
                .filter_map(|p| {
                    Some(Port {
                        name: p.name.clone().unwrap_or_default(),
                        protocol: p.protocol.as_deref().unwrap_or("TCP").to_ascii_lowercase(),
                        port: u16::try_from(p.port).ok()?,
                    })
                })
                .collect();
            idx.namespaces.insert(ns.clone());
            idx.services.insert(
                (ns.clone(), name.clone()),
                Svc {
                    kind,
                    ports,
                    endpoints: Vec::new(),
                },
            );
        }
        for sl in slices {
            let sl = sl.as_ref();
            let (Some(ns), Some(svc_name)) = (
                &sl.metadata.namespace,
                sl.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(SERVICE_NAME_LABEL)),
            ) else {
                continue;
            };
            let Some(svc) = idx.services.get_mut(&(ns.clone(), svc_name.clone())) else {
                continue;
            };
            if !matches!(svc.kind, Kind::Headless) {
                continue;
            }
            let ports = slice_ports(sl);
            for ep in &sl.endpoints {
                // Upstream: only ready endpoints are published (publishNotReadyAddresses makes
                // the controller mark them ready).
                if ep.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
                    continue;
                }
                for a in &ep.addresses {
                    let Ok(ip) = a.parse::<IpAddr>() else {
                        continue;
                    };
                    let label = ep
                        .hostname
                        .clone()
                        .filter(|h| !h.is_empty())
                        .unwrap_or_else(|| dashed(&ip))
                        .to_ascii_lowercase();
                    svc.endpoints.push(Endpoint {
                        ip,
                        label,
                        ports: ports.clone(),
                    });
                }
            }
        }
        for ((ns, name), svc) in &idx.services {
            let base = format!("{name}.{ns}.svc.{}", idx.zone);
            match &svc.kind {
                Kind::ClusterIp(ips) => {
                    for ip in ips {
                        idx.reverse.entry(*ip).or_default().push(base.clone());
                    }
                }
                Kind::Headless => {
                    for ep in &svc.endpoints {
                        idx.reverse
                            .entry(ep.ip)
                            .or_default()
                            .push(format!("{}.{base}", ep.label));
                    }
                }
                Kind::ExternalName(_) => {}
            }
        }
        for names in idx.reverse.values_mut() {
            names.sort();
            names.dedup();
        }
        idx
    }

    fn soa(&self) -> Vec<Record> {
        let (Some(apex), Some(mname), Some(rname)) = (
            fqdn(&self.zone),
            fqdn(&format!("ns.dns.{}", self.zone)),
            fqdn(&format!("hostmaster.{}", self.zone)),
        ) else {
            return Vec::new();
        };
        let soa = SOA::new(
            mname,
            rname,
            self.serial,
            SOA_REFRESH,
            SOA_RETRY,
            SOA_EXPIRE,
            self.ttl,
        );
        vec![Record::from_rdata(apex, self.ttl, RData::SOA(soa))]
    }

    fn negative(&self, rcode: ResponseCode) -> Lookup {
        Lookup::Answer(Answer {
            rcode,
            answers: Vec::new(),
            authorities: self.soa(),
            additionals: Vec::new(),
        })
    }

    fn answer(&self, answers: Vec<Record>, additionals: Vec<Record>) -> Lookup {
        if answers.is_empty() {
            return self.negative(ResponseCode::NoError);
        }
        Lookup::Answer(Answer {
            rcode: ResponseCode::NoError,
            answers,
            authorities: Vec::new(),
            additionals,
        })
    }

    /// The kube-dns Service's addresses (the zone's name server).
    fn ns_addresses(&self) -> Vec<IpAddr> {
        match self.services.get(&self.dns_service).map(|s| &s.kind) {
            Some(Kind::ClusterIp(ips)) => ips.clone(),
            _ => Vec::new(),
        }
    }

    /// Answers `name` (any case, with or without the trailing dot) of type `qtype`.
    pub fn lookup(&self, name: &str, qtype: RecordType) -> Lookup {
        let lower = name.trim_end_matches('.').to_ascii_lowercase();
        let all: Vec<&str> = lower.split('.').collect();
        if lower.ends_with(".in-addr.arpa") || lower.ends_with(".ip6.arpa") {
            return self.reverse_lookup(&lower, &all, qtype);
        }
        let rel = if lower == self.zone {
            ""
        } else if let Some(r) = lower.strip_suffix(&format!(".{}", self.zone)) {
            r
        } else {
            return Lookup::NotOurs;
        };
        let Some(qname) = fqdn(&lower) else {
            return self.negative(ResponseCode::NXDomain);
        };
        let labels: Vec<&str> = if rel.is_empty() {
            Vec::new()
        } else {
            rel.split('.').collect()
        };
        match labels.as_slice() {
            [] => self.apex(&qname, qtype),
            ["svc"] | ["pod"] | ["dns"] => self.negative(ResponseCode::NoError),
            ["ns", "dns"] => {
                let answers = self
                    .ns_addresses()
                    .into_iter()
                    .filter(|ip| matches_type(ip, qtype))
                    .map(|ip| address_record(&qname, self.ttl, ip))
                    .collect();
                self.answer(answers, Vec::new())
            }
            [ns, "svc"] | [ns, "pod"] => match self.namespaces.contains(*ns) {
                true => self.negative(ResponseCode::NoError),
                false => self.negative(ResponseCode::NXDomain),
            },
            [host, _ns, "pod"] => match parse_dashed(host) {
                Some(ip) => {
                    let answers = [ip]
                        .into_iter()
                        .filter(|ip| matches_type(ip, qtype))
                        .map(|ip| address_record(&qname, self.ttl, ip))
                        .collect();
                    self.answer(answers, Vec::new())
                }
                None => self.negative(ResponseCode::NXDomain),
            },
            [svc, ns, "svc"] => self.service(&qname, ns, svc, qtype),
            [first, svc, ns, "svc"] => self.below_service(&qname, first, svc, ns, qtype),
            [port, proto, svc, ns, "svc"] => self.srv(port, proto, svc, ns, qtype),
            _ => self.negative(ResponseCode::NXDomain),
        }
    }

    fn apex(&self, qname: &Name, qtype: RecordType) -> Lookup {
        match qtype {
            RecordType::SOA => self.answer(self.soa(), Vec::new()),
            RecordType::NS => {
                let Some(ns) = fqdn(&format!("ns.dns.{}", self.zone)) else {
                    return self.negative(ResponseCode::ServFail);
                };
                let additionals = self
                    .ns_addresses()
                    .into_iter()
                    .map(|ip| address_record(&ns, self.ttl, ip))
                    .collect();
                let answers = vec![Record::from_rdata(
                    qname.clone(),
                    self.ttl,
                    RData::NS(NS(ns)),
                )];
                self.answer(answers, additionals)
            }
            _ => self.negative(ResponseCode::NoError),
        }
    }

    fn service(&self, qname: &Name, ns: &str, name: &str, qtype: RecordType) -> Lookup {
        let Some(svc) = self.services.get(&(ns.to_string(), name.to_string())) else {
            return self.negative(ResponseCode::NXDomain);
        };
        let ips: Vec<IpAddr> = match &svc.kind {
            Kind::ExternalName(target) => {
                let Some(t) = fqdn(target) else {
                    return self.negative(ResponseCode::ServFail);
                };
                let cname = Record::from_rdata(qname.clone(), self.ttl, RData::CNAME(CNAME(t)));
                let mut answers = vec![cname];
                // An alias inside the zone is followed here; one outside by the caller.
                if qtype != RecordType::CNAME
                    && let Lookup::Answer(a) = self.lookup(target, qtype)
                {
                    answers.extend(a.answers);
                }
                return self.answer(answers, Vec::new());
            }
            Kind::ClusterIp(ips) => ips.clone(),
            Kind::Headless => svc.endpoints.iter().map(|e| e.ip).collect(),
        };
        let mut answers: Vec<Record> = Vec::new();
        let mut additionals = Vec::new();
        match qtype {
            RecordType::A | RecordType::AAAA | RecordType::ANY => {
                let mut seen = Vec::new();
                for ip in ips {
                    if matches_type(&ip, qtype) && !seen.contains(&ip) {
                        seen.push(ip);
                        answers.push(address_record(qname, self.ttl, ip));
                    }
                }
            }
            // SRV at the bare name: every named port, as CoreDNS answers.
            RecordType::SRV => {
                let (a, add) = self.srv_records(svc, name, ns, |p| !p.name.is_empty());
                answers = a;
                additionals = add;
            }
            _ => {}
        }
        self.answer(answers, additionals)
    }

    /// `<host>.<svc>.<ns>.svc`: an endpoint of a headless Service, or the empty non-terminal
    /// `_<proto>.<svc>.<ns>.svc`.
    fn below_service(
        &self,
        qname: &Name,
        first: &str,
        name: &str,
        ns: &str,
        qtype: RecordType,
    ) -> Lookup {
        let Some(svc) = self.services.get(&(ns.to_string(), name.to_string())) else {
            return self.negative(ResponseCode::NXDomain);
        };
        if let Some(proto) = first.strip_prefix('_') {
            return match svc.ports.iter().any(|p| p.protocol == proto) {
                true => self.negative(ResponseCode::NoError),
                false => self.negative(ResponseCode::NXDomain),
            };
        }
        let eps: Vec<&Endpoint> = svc.endpoints.iter().filter(|e| e.label == first).collect();
        if eps.is_empty() {
            return self.negative(ResponseCode::NXDomain);
        }
        let answers = eps
            .iter()
            .filter(|e| matches_type(&e.ip, qtype))
            .map(|e| address_record(qname, self.ttl, e.ip))
            .collect();
        self.answer(answers, Vec::new())
    }

    fn srv(&self, port: &str, proto: &str, name: &str, ns: &str, qtype: RecordType) -> Lookup {
        let (Some(port), Some(proto)) = (port.strip_prefix('_'), proto.strip_prefix('_')) else {
            return self.negative(ResponseCode::NXDomain);
        };
        let Some(svc) = self.services.get(&(ns.to_string(), name.to_string())) else {
            return self.negative(ResponseCode::NXDomain);
        };
        let (answers, additionals) =
            self.srv_records(svc, name, ns, |p| p.name == port && p.protocol == proto);
        if answers.is_empty() {
            return self.negative(ResponseCode::NXDomain);
        }
        match qtype {
            RecordType::SRV | RecordType::ANY => self.answer(answers, additionals),
            _ => self.negative(ResponseCode::NoError),
        }
    }

    /// SRV records of the ports `want` picks, with the targets' addresses as additionals:
    /// the Service name for a ClusterIP Service, each endpoint's name for a headless one.
    fn srv_records(
        &self,
        svc: &Svc,
        name: &str,
        ns: &str,
        want: impl Fn(&Port) -> bool,
    ) -> (Vec<Record>, Vec<Record>) {
        let base = format!("{name}.{ns}.svc.{}", self.zone);
        let mut srvs: Vec<(String, u16, u16, Option<IpAddr>)> = Vec::new();
        let owner = |p: &Port| format!("_{}._{}.{base}", p.name, p.protocol);
        let mut owners: Vec<String> = Vec::new();
        match &svc.kind {
            Kind::ClusterIp(_) => {
                for p in svc.ports.iter().filter(|p| want(p)) {
                    owners.push(owner(p));
                    srvs.push((base.clone(), p.port, 0, None));
                }
            }
            Kind::Headless => {
                for ep in &svc.endpoints {
                    for p in ep.ports.iter().filter(|p| want(p)) {
                        owners.push(owner(p));
                        srvs.push((format!("{}.{base}", ep.label), p.port, 0, Some(ep.ip)));
                    }
                }
            }
            Kind::ExternalName(_) => {}
        }
        // CoreDNS's weights: 100 shared out among the records of one owner name.
        let weight = |o: &str| {
            let n = owners.iter().filter(|x| *x == o).count().max(1);
            u16::try_from(100 / n).unwrap_or(1).max(1)
        };
        let mut answers = Vec::new();
        let mut additionals = Vec::new();
        for ((target, port, priority, ip), o) in srvs.iter().zip(&owners) {
            let (Some(owner_name), Some(target_name)) = (fqdn(o), fqdn(target)) else {
                continue;
            };
            let rdata = SRV::new(*priority, weight(o), *port, target_name.clone());
            answers.push(Record::from_rdata(owner_name, self.ttl, RData::SRV(rdata)));
            let ips: Vec<IpAddr> = match (ip, &svc.kind) {
                (Some(ip), _) => vec![*ip],
                (None, Kind::ClusterIp(ips)) => ips.clone(),
                _ => Vec::new(),
            };
            for ip in ips {
                let r = address_record(&target_name, self.ttl, ip);
                if !additionals.contains(&r) {
                    additionals.push(r);
                }
            }
        }
        (answers, additionals)
    }

    fn reverse_lookup(&self, lower: &str, all: &[&str], qtype: RecordType) -> Lookup {
        let Some(ip) = reverse_ip(all) else {
            return Lookup::NotOurs;
        };
        let Some(names) = self.reverse.get(&ip) else {
            return Lookup::NotOurs;
        };
        let Some(qname) = fqdn(lower) else {
            return Lookup::NotOurs;
        };
        if !matches!(qtype, RecordType::PTR | RecordType::ANY) {
            return self.negative(ResponseCode::NoError);
        }
        let answers = names
            .iter()
            .filter_map(|n| fqdn(n))
            .map(|n| Record::from_rdata(qname.clone(), self.ttl, RData::PTR(PTR(n))))
            .collect();
        self.answer(answers, Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(json: serde_json::Value) -> Service {
        serde_json::from_value(json).unwrap()
    }

    fn index() -> Index {
        let services = vec![
            svc(serde_json::json!({
                "metadata": {"name": "kubernetes", "namespace": "default"},
                "spec": {"clusterIP": "10.152.183.1", "clusterIPs": ["10.152.183.1"],
                         "ports": [{"name": "https", "port": 443, "protocol": "TCP"}]}
            })),
            svc(serde_json::json!({
                "metadata": {"name": "kube-dns", "namespace": "kube-system"},
                "spec": {"clusterIP": "10.152.183.10",
                         "ports": [{"name": "dns", "port": 53, "protocol": "UDP"}]}
            })),
            svc(serde_json::json!({
                "metadata": {"name": "db", "namespace": "shop"},
                "spec": {"clusterIP": "None",
                         "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}]}
            })),
            svc(serde_json::json!({
                "metadata": {"name": "ext", "namespace": "shop"},
                "spec": {"type": "ExternalName", "externalName": "db.example.com"}
            })),
            svc(serde_json::json!({
                "metadata": {"name": "alias", "namespace": "shop"},
                "spec": {"type": "ExternalName",
                         "externalName": "kubernetes.default.svc.cluster.local"}
            })),
        ];
        let services: Vec<std::sync::Arc<Service>> =
            services.into_iter().map(std::sync::Arc::new).collect();
        let slices: Vec<std::sync::Arc<EndpointSlice>> = vec![
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "db-1", "namespace": "shop",
                             "labels": {"kubernetes.io/service-name": "db"}},
                "addressType": "IPv4",
                "endpoints": [
                    {"addresses": ["10.1.0.7"], "hostname": "db-0", "conditions": {"ready": true}},
                    {"addresses": ["10.1.0.8"], "conditions": {"ready": true}},
                    {"addresses": ["10.1.0.9"], "conditions": {"ready": false}}
                ],
                "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}]
            }))
            .map(std::sync::Arc::new)
            .unwrap(),
        ];
        Index::build(
            "cluster.local",
            5,
            1,
            ("kube-system", "kube-dns"),
            &services,
            &slices,
        )
    }

    fn answer(l: Lookup) -> Answer {
        match l {
            Lookup::Answer(a) => a,
            Lookup::NotOurs => panic!("not ours"),
        }
    }

    fn rdatas(a: &Answer) -> Vec<String> {
        let mut v: Vec<String> = a.answers.iter().map(|r| r.data.to_string()).collect();
        v.sort();
        v
    }

    #[test]
    fn cluster_ip_services_answer_a_with_the_ttl() {
        let a = answer(index().lookup("kubernetes.default.svc.cluster.local.", RecordType::A));
        assert_eq!(a.rcode, ResponseCode::NoError);
        assert_eq!(rdatas(&a), ["10.152.183.1"]);
        assert_eq!(a.answers[0].ttl, 5);
        // Case does not matter; the trailing dot is optional.
        let a = answer(index().lookup("KUBERNETES.Default.svc.cluster.local", RecordType::A));
        assert_eq!(rdatas(&a), ["10.152.183.1"]);
    }

    #[test]
    fn missing_type_is_nodata_and_missing_name_nxdomain() {
        let a = answer(index().lookup("kubernetes.default.svc.cluster.local.", RecordType::AAAA));
        assert_eq!(a.rcode, ResponseCode::NoError);
        assert!(a.answers.is_empty());
        assert_eq!(a.authorities[0].record_type(), RecordType::SOA);
        let a = answer(index().lookup("nope.default.svc.cluster.local.", RecordType::A));
        assert_eq!(a.rcode, ResponseCode::NXDomain);
        assert_eq!(a.authorities[0].record_type(), RecordType::SOA);
        let a = answer(index().lookup("shop.svc.cluster.local.", RecordType::A));
        assert_eq!(a.rcode, ResponseCode::NoError);
        let a = answer(index().lookup("nowhere.svc.cluster.local.", RecordType::A));
        assert_eq!(a.rcode, ResponseCode::NXDomain);
        let a = answer(index().lookup("a.b.c.d.e.f.cluster.local.", RecordType::A));
        assert_eq!(a.rcode, ResponseCode::NXDomain);
    }

    #[test]
    fn headless_services_answer_ready_endpoints_by_name() {
        let i = index();
        let a = answer(i.lookup("db.shop.svc.cluster.local.", RecordType::A));
        assert_eq!(rdatas(&a), ["10.1.0.7", "10.1.0.8"]);
        let a = answer(i.lookup("db-0.db.shop.svc.cluster.local.", RecordType::A));
        assert_eq!(rdatas(&a), ["10.1.0.7"]);
        let a = answer(i.lookup("10-1-0-8.db.shop.svc.cluster.local.", RecordType::A));
        assert_eq!(rdatas(&a), ["10.1.0.8"]);
        let a = answer(i.lookup("10-1-0-9.db.shop.svc.cluster.local.", RecordType::A));
        assert_eq!(a.rcode, ResponseCode::NXDomain);
    }

    #[test]
    fn srv_names_ports_and_targets() {
        let i = index();
        let a = answer(i.lookup(
            "_https._tcp.kubernetes.default.svc.cluster.local.",
            RecordType::SRV,
        ));
        assert_eq!(
            rdatas(&a),
            ["0 100 443 kubernetes.default.svc.cluster.local."]
        );
        assert_eq!(a.additionals[0].data.to_string(), "10.152.183.1");
        let a = answer(i.lookup("_pg._tcp.db.shop.svc.cluster.local.", RecordType::SRV));
        assert_eq!(
            rdatas(&a),
            [
                "0 50 5432 10-1-0-8.db.shop.svc.cluster.local.",
                "0 50 5432 db-0.db.shop.svc.cluster.local."
            ]
        );
        assert_eq!(a.additionals.len(), 2);
        let a = answer(i.lookup("_pg._udp.db.shop.svc.cluster.local.", RecordType::SRV));
        assert_eq!(a.rcode, ResponseCode::NXDomain);
        let a = answer(i.lookup("_tcp.db.shop.svc.cluster.local.", RecordType::SRV));
        assert_eq!(a.rcode, ResponseCode::NoError);
    }

    #[test]
    fn ptr_for_cluster_ips_and_headless_endpoints() {
        let i = index();
        let a = answer(i.lookup("1.183.152.10.in-addr.arpa.", RecordType::PTR));
        assert_eq!(rdatas(&a), ["kubernetes.default.svc.cluster.local."]);
        let a = answer(i.lookup("7.0.1.10.in-addr.arpa.", RecordType::PTR));
        assert_eq!(rdatas(&a), ["db-0.db.shop.svc.cluster.local."]);
        assert_eq!(
            i.lookup("9.9.9.9.in-addr.arpa.", RecordType::PTR),
            Lookup::NotOurs
        );
    }

    #[test]
    fn external_names_are_cnames_followed_inside_the_zone() {
        let i = index();
        let a = answer(i.lookup("ext.shop.svc.cluster.local.", RecordType::A));
        assert_eq!(rdatas(&a), ["db.example.com."]);
        let a = answer(i.lookup("alias.shop.svc.cluster.local.", RecordType::A));
        assert_eq!(
            rdatas(&a),
            ["10.152.183.1", "kubernetes.default.svc.cluster.local."]
        );
    }

    #[test]
    fn apex_pods_and_foreign_names() {
        let i = index();
        let a = answer(i.lookup("cluster.local.", RecordType::SOA));
        assert_eq!(
            rdatas(&a),
            ["ns.dns.cluster.local. hostmaster.cluster.local. 1 7200 1800 86400 5"]
        );
        let a = answer(i.lookup("cluster.local.", RecordType::NS));
        assert_eq!(rdatas(&a), ["ns.dns.cluster.local."]);
        assert_eq!(a.additionals[0].data.to_string(), "10.152.183.10");
        let a = answer(i.lookup("10-1-0-5.shop.pod.cluster.local.", RecordType::A));
        assert_eq!(rdatas(&a), ["10.1.0.5"]);
        assert_eq!(i.lookup("example.com.", RecordType::A), Lookup::NotOurs);
        assert_eq!(
            i.lookup("notcluster.local.", RecordType::A),
            Lookup::NotOurs
        );
    }

    #[test]
    fn reverse_names_parse() {
        assert_eq!(
            reverse_ip(&["4", "3", "2", "1", "in-addr", "arpa"]),
            Some("1.2.3.4".parse().unwrap())
        );
        let v6: Vec<String> = "fd00::2"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets()
            .iter()
            .rev()
            .flat_map(|b| [format!("{:x}", b & 0xf), format!("{:x}", b >> 4)])
            .collect();
        let mut labels: Vec<&str> = v6.iter().map(String::as_str).collect();
        labels.extend(["ip6", "arpa"]);
        assert_eq!(reverse_ip(&labels), Some("fd00::2".parse().unwrap()));
        assert_eq!(reverse_ip(&["x", "in-addr", "arpa"]), None);
    }
}
