//! The nftables ruleset, as a pure function of the proxy's settings and the service ports it
//! serves: [`ruleset`] returns one transaction that deletes and recreates the whole table, so
//! each sync replaces whatever is there (a hand-edited table included) atomically.
//!
//! The layout follows upstream kube-proxy's nftables mode: filter chains at `dstnat - 10`
//! reject services without endpoints and drop unallocated service IPs before DNAT; nat chains
//! dispatch `daddr . l4proto . dport` through one verdict map to a chain per service port,
//! which picks an endpoint chain at random (`numgen random`) unless a client-IP affinity set
//! names one; endpoint chains DNAT. Masquerading is marked (`0x4000`) where it is needed
//! (traffic from outside the cluster CIDR, NodePorts, hairpin) and done in postrouting.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashSet};
use std::net::Ipv4Addr;

use nftables::expr::{
    BinaryOperation, Expression, Fib, FibFlag, FibResult, Meta, MetaKey, NamedExpression, NgMode,
    Numgen, Payload, PayloadField, Prefix, SetItem, Verdict,
};
use nftables::schema::{
    Chain, NfCmd, NfListObject, NfObject, Nftables, Rule, Set, SetFlag, SetType, SetTypeValue,
    Table,
};
use nftables::stmt::{self, JumpTarget, Match, NATFlag, Operator, Statement};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};

/// The mark that asks postrouting to masquerade, upstream's `--masquerade-bit=14`.
const MASQUERADE_MARK: u32 = 0x4000;
/// Upstream's priorities: filters see pre-DNAT addresses (`dstnat - 10`), the post-DNAT
/// output check runs after it (`dstnat + 10`).
const DSTNAT: i32 = -100;
const SRCNAT: i32 = 100;

/// An IPv4 prefix (`10.1.0.0/16`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: Ipv4Addr,
    pub len: u8,
}

impl Cidr {
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = u32::MAX.checked_shl(32 - u32::from(self.len)).unwrap_or(0);
        u32::from(ip) & mask == u32::from(self.addr) & mask
    }
}

impl std::str::FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (a, l) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not a CIDR (a.b.c.d/len)"))?;
        let addr: Ipv4Addr = a
            .parse()
            .map_err(|_| format!("{a:?} is not an IPv4 address"))?;
        let len: u8 = l
            .parse()
            .ok()
            .filter(|l| *l <= 32)
            .ok_or_else(|| format!("{l:?} is not a prefix length (0-32)"))?;
        Ok(Cidr { addr, len })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }

    fn nft(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

/// One usable endpoint of a service port.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Endpoint {
    pub ip: Ipv4Addr,
    pub port: u16,
    /// On this node (`nodeName`), for the `Local` traffic policies.
    pub local: bool,
}

/// One port of a Service, with the endpoints traffic may go to (already chosen: ready ones, or
/// serving-and-terminating ones when none is ready, as upstream).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    pub namespace: String,
    pub name: String,
    pub port_name: String,
    pub protocol: Protocol,
    pub cluster_ip: Ipv4Addr,
    pub port: u16,
    pub node_port: Option<u16>,
    /// `externalIPs` and load-balancer ingress IPs: treated as external traffic.
    pub external_ips: Vec<Ipv4Addr>,
    /// `sessionAffinity: ClientIP`'s timeout, in seconds.
    pub affinity_timeout: Option<u32>,
    pub external_local: bool,
    pub internal_local: bool,
    pub endpoints: Vec<Endpoint>,
}

impl ServicePort {
    /// `ns/name/proto/port-name`, as upstream names its chains.
    fn id(&self) -> String {
        format!(
            "{}/{}/{}/{}",
            self.namespace,
            self.name,
            self.protocol.nft(),
            self.port_name
        )
    }
}

/// What shapes the ruleset besides the services.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The table (`ip <table>`): one per proxy, so two never fight over one.
    pub table: String,
    /// Pod addresses: cluster traffic from elsewhere is masqueraded (`--cluster-cidr`).
    pub cluster_cidr: Option<Cidr>,
    /// The service range: unallocated addresses in it are dropped here, never routed.
    pub service_range: Option<Cidr>,
    /// Where NodePorts answer; empty means every local address, 127.0.0.1 included.
    pub nodeport_addresses: Vec<Cidr>,
    /// `--masquerade-all`.
    pub masquerade_all: bool,
}

/// A short stable hash, so names stay unique and legible (upstream's `servicePortChainName`).
fn hash(s: &str) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, s.as_bytes());
    d.as_ref()[..4].iter().map(|b| format!("{b:02x}")).collect()
}

fn chain_name(kind: &str, id: &str) -> String {
    format!("{kind}-{}-{id}", hash(id))
}

fn endpoint_chain(sp: &ServicePort, ep: &Endpoint) -> String {
    chain_name("endpoint", &format!("{}__{}/{}", sp.id(), ep.ip, ep.port))
}

fn affinity_set(sp: &ServicePort, ep: &Endpoint) -> String {
    chain_name("affinity", &format!("{}__{}/{}", sp.id(), ep.ip, ep.port))
}

fn text(s: impl Into<String>) -> Expression<'static> {
    Expression::String(Cow::Owned(s.into()))
}

fn payload(protocol: &'static str, field: &'static str) -> Expression<'static> {
    Expression::Named(NamedExpression::Payload(Payload::PayloadField(
        PayloadField {
            protocol: Cow::Borrowed(protocol),
            field: Cow::Borrowed(field),
        },
    )))
}

fn meta(key: MetaKey) -> Expression<'static> {
    Expression::Named(NamedExpression::Meta(Meta { key }))
}

fn prefix(c: Cidr) -> Expression<'static> {
    Expression::Named(NamedExpression::Prefix(Prefix {
        addr: Box::new(text(c.addr.to_string())),
        len: u32::from(c.len),
    }))
}

fn matches(
    op: Operator,
    left: Expression<'static>,
    right: Expression<'static>,
) -> Statement<'static> {
    Statement::Match(Match { left, right, op })
}

fn ct_state_new() -> Statement<'static> {
    let ct = nftables::expr::CT {
        key: Cow::Borrowed("state"),
        family: None,
        dir: None,
    };
    matches(
        Operator::IN,
        Expression::Named(NamedExpression::CT(ct)),
        text("new"),
    )
}

fn fib_local(flag: FibFlag) -> Statement<'static> {
    let fib = Fib {
        result: FibResult::Type,
        flags: HashSet::from([flag]),
    };
    matches(
        Operator::EQ,
        Expression::Named(NamedExpression::Fib(fib)),
        text("local"),
    )
}

fn jump(target: &str) -> Statement<'static> {
    Statement::Jump(JumpTarget {
        target: Cow::Owned(target.into()),
    })
}

fn goto(target: &str) -> Statement<'static> {
    Statement::Goto(JumpTarget {
        target: Cow::Owned(target.into()),
    })
}

fn goto_verdict(target: &str) -> Expression<'static> {
    Expression::Verdict(Verdict::Goto(JumpTarget {
        target: Cow::Owned(target.into()),
    }))
}

fn mark_op(op: BinaryOperation<'static>) -> Expression<'static> {
    Expression::BinaryOperation(Box::new(op))
}

fn anonymous_set(items: Vec<Expression<'static>>) -> Expression<'static> {
    Expression::Named(NamedExpression::Set(
        items.into_iter().map(SetItem::Element).collect(),
    ))
}

fn vmap(
    key: Expression<'static>,
    entries: Vec<(Expression<'static>, String)>,
) -> Statement<'static> {
    Statement::VerdictMap(stmt::VerdictMap {
        key,
        data: Expression::Named(NamedExpression::Set(
            entries
                .into_iter()
                .map(|(k, target)| SetItem::Mapping(k, goto_verdict(&target)))
                .collect(),
        )),
    })
}

/// `ip daddr . meta l4proto . th dport`
fn service_key() -> Expression<'static> {
    Expression::Named(NamedExpression::Concat(vec![
        payload("ip", "daddr"),
        meta(MetaKey::L4proto),
        payload("th", "dport"),
    ]))
}

/// `meta l4proto . th dport`
fn nodeport_key() -> Expression<'static> {
    Expression::Named(NamedExpression::Concat(vec![
        meta(MetaKey::L4proto),
        payload("th", "dport"),
    ]))
}

fn service_entry(ip: Ipv4Addr, proto: Protocol, port: u16) -> Expression<'static> {
    Expression::Named(NamedExpression::Concat(vec![
        text(ip.to_string()),
        text(proto.nft()),
        Expression::Number(u32::from(port)),
    ]))
}

fn nodeport_entry(proto: Protocol, port: u16) -> Expression<'static> {
    Expression::Named(NamedExpression::Concat(vec![
        text(proto.nft()),
        Expression::Number(u32::from(port)),
    ]))
}

/// The transaction under construction: chains first, then rules, in one batch.
struct Builder {
    table: String,
    chains: Vec<NfObject<'static>>,
    rules: Vec<NfObject<'static>>,
}

impl Builder {
    fn chain(&mut self, name: &str) {
        self.chains
            .push(NfObject::CmdObject(NfCmd::Add(NfListObject::Chain(
                Chain {
                    family: NfFamily::IP,
                    table: Cow::Owned(self.table.clone()),
                    name: Cow::Owned(name.into()),
                    ..Default::default()
                },
            ))));
    }

    fn base_chain(&mut self, name: &str, kind: NfChainType, hook: NfHook, prio: i32) {
        self.chains
            .push(NfObject::CmdObject(NfCmd::Add(NfListObject::Chain(
                Chain {
                    family: NfFamily::IP,
                    table: Cow::Owned(self.table.clone()),
                    name: Cow::Owned(name.into()),
                    _type: Some(kind),
                    hook: Some(hook),
                    prio: Some(prio),
                    policy: Some(NfChainPolicy::Accept),
                    ..Default::default()
                },
            ))));
    }

    fn affinity(&mut self, name: &str, timeout: u32) {
        self.chains
            .push(NfObject::CmdObject(NfCmd::Add(NfListObject::Set(
                Box::new(Set {
                    family: NfFamily::IP,
                    table: Cow::Owned(self.table.clone()),
                    name: Cow::Owned(name.into()),
                    set_type: SetTypeValue::Single(SetType::Ipv4Addr),
                    // nft marks it dynamic itself, as rules update it (1.0's JSON has no `dynamic`).
                    flags: Some(HashSet::from([SetFlag::Timeout])),
                    timeout: Some(timeout),
                    ..Default::default()
                }),
            ))));
    }

    fn rule(&mut self, chain: &str, expr: Vec<Statement<'static>>) {
        self.rules
            .push(NfObject::CmdObject(NfCmd::Add(NfListObject::Rule(Rule {
                family: NfFamily::IP,
                table: Cow::Owned(self.table.clone()),
                chain: Cow::Owned(chain.into()),
                expr: Cow::Owned(expr),
                ..Default::default()
            }))));
    }

    /// Rules of `chain` that send a connection to one of `endpoints`: the endpoint its client
    /// was sent to before (affinity), else one at random.
    fn dispatch(&mut self, chain: &str, sp: &ServicePort, endpoints: &[&Endpoint]) {
        if sp.affinity_timeout.is_some() {
            for ep in endpoints {
                self.rule(
                    chain,
                    vec![
                        matches(
                            Operator::EQ,
                            payload("ip", "saddr"),
                            text(format!("@{}", affinity_set(sp, ep))),
                        ),
                        goto(&endpoint_chain(sp, ep)),
                    ],
                );
            }
        }
        let n = endpoints.len() as u32;
        let key = Expression::Named(NamedExpression::Numgen(Numgen {
            mode: NgMode::Random,
            ng_mod: n,
            offset: None,
        }));
        let entries = endpoints
            .iter()
            .enumerate()
            .map(|(i, ep)| (Expression::Number(i as u32), endpoint_chain(sp, ep)))
            .collect();
        self.rule(chain, vec![vmap(key, entries)]);
    }
}

/// Names of the fixed chains.
const SERVICES: &str = "services";
const MASQUERADING: &str = "masquerading";
const MARK_FOR_MASQUERADE: &str = "mark-for-masquerade";
const REJECT: &str = "reject-chain";
const SERVICE_CHECK: &str = "service-endpoints-check";
const NODEPORT_CHECK: &str = "nodeport-endpoints-check";
const CLUSTER_IPS_CHECK: &str = "cluster-ips-check";

/// The transaction that deletes the table (if any) and creates it anew with every rule.
pub fn ruleset(settings: &Settings, ports: &[ServicePort]) -> Nftables<'static> {
    let table = settings.table.clone();
    let mut b = Builder {
        table: table.clone(),
        chains: Vec::new(),
        rules: Vec::new(),
    };

    for (name, kind, hook, prio) in [
        (
            "filter-input",
            NfChainType::Filter,
            NfHook::Input,
            DSTNAT - 10,
        ),
        (
            "filter-forward",
            NfChainType::Filter,
            NfHook::Forward,
            DSTNAT - 10,
        ),
        (
            "filter-output",
            NfChainType::Filter,
            NfHook::Output,
            DSTNAT - 10,
        ),
        (
            "filter-output-post-dnat",
            NfChainType::Filter,
            NfHook::Output,
            DSTNAT + 10,
        ),
        (
            "nat-prerouting",
            NfChainType::NAT,
            NfHook::Prerouting,
            DSTNAT,
        ),
        ("nat-output", NfChainType::NAT, NfHook::Output, DSTNAT),
        (
            "nat-postrouting",
            NfChainType::NAT,
            NfHook::Postrouting,
            SRCNAT,
        ),
    ] {
        b.base_chain(name, kind, hook, prio);
    }
    for name in [
        SERVICES,
        MASQUERADING,
        MARK_FOR_MASQUERADE,
        REJECT,
        SERVICE_CHECK,
        NODEPORT_CHECK,
        CLUSTER_IPS_CHECK,
    ] {
        b.chain(name);
    }

    // Filters: new connections only, so established ones finish undisturbed.
    b.rule("filter-input", vec![ct_state_new(), jump(NODEPORT_CHECK)]);
    b.rule("filter-input", vec![ct_state_new(), jump(SERVICE_CHECK)]);
    // route_localnet lets 127.0.0.1 NodePorts be DNATed; what then still arrives for 127/8
    // from outside the host is martian (upstream iptables mode's KUBE-FIREWALL rule).
    b.rule(
        "filter-input",
        vec![
            matches(Operator::NEQ, meta(MetaKey::Iifname), text("lo")),
            matches(
                Operator::EQ,
                payload("ip", "daddr"),
                prefix(Cidr {
                    addr: Ipv4Addr::new(127, 0, 0, 0),
                    len: 8,
                }),
            ),
            ct_state_new(),
            Statement::Drop(None),
        ],
    );
    b.rule("filter-forward", vec![ct_state_new(), jump(SERVICE_CHECK)]);
    b.rule(
        "filter-forward",
        vec![ct_state_new(), jump(CLUSTER_IPS_CHECK)],
    );
    b.rule("filter-output", vec![ct_state_new(), jump(SERVICE_CHECK)]);
    b.rule(
        "filter-output-post-dnat",
        vec![ct_state_new(), jump(CLUSTER_IPS_CHECK)],
    );
    // The external NodePort view of the host is its own: a packet from outside for 127/8 is
    // never a NodePort (local clients reach 127.0.0.1 through nat-output).
    b.rule(
        "nat-prerouting",
        vec![
            matches(
                Operator::EQ,
                payload("ip", "daddr"),
                prefix(Cidr {
                    addr: Ipv4Addr::new(127, 0, 0, 0),
                    len: 8,
                }),
            ),
            Statement::Return(None),
        ],
    );
    b.rule("nat-prerouting", vec![jump(SERVICES)]);
    b.rule("nat-output", vec![jump(SERVICES)]);
    b.rule("nat-postrouting", vec![jump(MASQUERADING)]);

    let mark = meta(MetaKey::Mark);
    b.rule(
        MARK_FOR_MASQUERADE,
        vec![Statement::Mangle(stmt::Mangle {
            key: mark.clone(),
            value: mark_op(BinaryOperation::OR(vec![
                mark.clone(),
                Expression::Number(MASQUERADE_MARK),
            ])),
        })],
    );
    b.rule(
        MASQUERADING,
        vec![
            matches(
                Operator::EQ,
                mark_op(BinaryOperation::AND(
                    mark.clone(),
                    Expression::Number(MASQUERADE_MARK),
                )),
                Expression::Number(0),
            ),
            Statement::Return(None),
        ],
    );
    b.rule(
        MASQUERADING,
        vec![Statement::Mangle(stmt::Mangle {
            key: mark.clone(),
            value: mark_op(BinaryOperation::XOR(
                mark,
                Expression::Number(MASQUERADE_MARK),
            )),
        })],
    );
    b.rule(
        MASQUERADING,
        vec![Statement::Masquerade(Some(stmt::NAT {
            addr: None,
            family: None,
            port: None,
            flags: Some(HashSet::from([NATFlag::FullyRandom])),
        }))],
    );
    b.rule(
        REJECT,
        vec![
            matches(Operator::EQ, meta(MetaKey::L4proto), text("tcp")),
            Statement::Reject(Some(stmt::Reject::new(
                Some(stmt::RejectType::TCPReset),
                None,
            ))),
        ],
    );
    b.rule(REJECT, vec![Statement::Reject(None)]);

    let mut service_map = Vec::new();
    let mut nodeport_map = Vec::new();
    let mut no_endpoint_services = Vec::new();
    let mut no_endpoint_nodeports = Vec::new();
    let mut cluster_ips = BTreeSet::new();

    for sp in ports {
        cluster_ips.insert(sp.cluster_ip);
        let svc_chain = chain_name("service", &sp.id());
        let ext_chain = chain_name("external", &sp.id());
        let cluster_eps: Vec<&Endpoint> = sp
            .endpoints
            .iter()
            .filter(|e| !sp.internal_local || e.local)
            .collect();
        let local_eps: Vec<&Endpoint> = sp.endpoints.iter().filter(|e| e.local).collect();
        let external_eps = if sp.external_local {
            &local_eps
        } else {
            &cluster_eps
        };

        if sp.endpoints.is_empty() {
            // No endpoint anywhere: refuse at once rather than let the client time out.
            no_endpoint_services.push(service_entry(sp.cluster_ip, sp.protocol, sp.port));
            for ip in &sp.external_ips {
                no_endpoint_services.push(service_entry(*ip, sp.protocol, sp.port));
            }
            if let Some(np) = sp.node_port {
                no_endpoint_nodeports.push(nodeport_entry(sp.protocol, np));
            }
            continue;
        }

        // Endpoint chains: hairpin masquerade, affinity bookkeeping, DNAT.
        for ep in &sp.endpoints {
            let name = endpoint_chain(sp, ep);
            b.chain(&name);
            b.rule(
                &name,
                vec![
                    matches(
                        Operator::EQ,
                        payload("ip", "saddr"),
                        text(ep.ip.to_string()),
                    ),
                    jump(MARK_FOR_MASQUERADE),
                ],
            );
            if let Some(timeout) = sp.affinity_timeout {
                let set = affinity_set(sp, ep);
                b.affinity(&set, timeout);
                b.rule(
                    &name,
                    vec![Statement::Set(stmt::Set {
                        op: stmt::SetOp::Update,
                        elem: payload("ip", "saddr"),
                        set: Cow::Owned(format!("@{set}")),
                    })],
                );
            }
            b.rule(
                &name,
                vec![
                    matches(
                        Operator::EQ,
                        meta(MetaKey::L4proto),
                        text(sp.protocol.nft()),
                    ),
                    Statement::DNAT(Some(stmt::NAT {
                        addr: Some(text(ep.ip.to_string())),
                        family: None,
                        port: Some(Expression::Number(u32::from(ep.port))),
                        flags: None,
                    })),
                ],
            );
        }

        // The cluster (internal) view.
        b.chain(&svc_chain);
        if settings.masquerade_all {
            b.rule(&svc_chain, vec![jump(MARK_FOR_MASQUERADE)]);
        } else if let Some(cidr) = settings.cluster_cidr {
            b.rule(
                &svc_chain,
                vec![
                    matches(Operator::NEQ, payload("ip", "saddr"), prefix(cidr)),
                    jump(MARK_FOR_MASQUERADE),
                ],
            );
        }
        if cluster_eps.is_empty() {
            // internalTrafficPolicy: Local with no endpoint here: upstream drops.
            b.rule(&svc_chain, vec![Statement::Drop(None)]);
        } else {
            b.dispatch(&svc_chain, sp, &cluster_eps);
        }
        service_map.push((
            service_entry(sp.cluster_ip, sp.protocol, sp.port),
            svc_chain.clone(),
        ));

        // The external view: NodePort, external IPs.
        if sp.node_port.is_none() && sp.external_ips.is_empty() {
            continue;
        }
        b.chain(&ext_chain);
        if sp.external_local {
            // Pods and the host itself keep the cluster view; others keep their source IP.
            if let Some(cidr) = settings.cluster_cidr {
                b.rule(
                    &ext_chain,
                    vec![
                        matches(Operator::EQ, payload("ip", "saddr"), prefix(cidr)),
                        goto(&svc_chain),
                    ],
                );
            }
            b.rule(
                &ext_chain,
                vec![fib_local(FibFlag::Saddr), jump(MARK_FOR_MASQUERADE)],
            );
            b.rule(
                &ext_chain,
                vec![fib_local(FibFlag::Saddr), goto(&svc_chain)],
            );
            if external_eps.is_empty() {
                b.rule(&ext_chain, vec![Statement::Drop(None)]);
            } else {
                let local_chain = chain_name("local", &sp.id());
                b.chain(&local_chain);
                b.dispatch(&local_chain, sp, external_eps);
                b.rule(&ext_chain, vec![goto(&local_chain)]);
            }
        } else {
            b.rule(&ext_chain, vec![jump(MARK_FOR_MASQUERADE)]);
            b.rule(&ext_chain, vec![goto(&svc_chain)]);
        }
        for ip in &sp.external_ips {
            service_map.push((service_entry(*ip, sp.protocol, sp.port), ext_chain.clone()));
        }
        if let Some(np) = sp.node_port {
            nodeport_map.push((nodeport_entry(sp.protocol, np), ext_chain.clone()));
        }
    }

    let nodeport_dest = || {
        let mut m = vec![fib_local(FibFlag::Daddr)];
        if !settings.nodeport_addresses.is_empty() {
            m.push(matches(
                Operator::EQ,
                payload("ip", "daddr"),
                anonymous_set(
                    settings
                        .nodeport_addresses
                        .iter()
                        .map(|c| prefix(*c))
                        .collect(),
                ),
            ));
        }
        m
    };
    if !service_map.is_empty() {
        b.rule(SERVICES, vec![vmap(service_key(), service_map)]);
    }
    if !nodeport_map.is_empty() {
        let mut r = nodeport_dest();
        r.push(vmap(nodeport_key(), nodeport_map));
        b.rule(SERVICES, r);
    }
    if !no_endpoint_services.is_empty() {
        let entries = no_endpoint_services
            .into_iter()
            .map(|k| (k, REJECT.to_string()))
            .collect();
        b.rule(SERVICE_CHECK, vec![vmap(service_key(), entries)]);
    }
    if !no_endpoint_nodeports.is_empty() {
        let entries = no_endpoint_nodeports
            .into_iter()
            .map(|k| (k, REJECT.to_string()))
            .collect();
        let mut r = nodeport_dest();
        r.push(vmap(nodeport_key(), entries));
        b.rule(NODEPORT_CHECK, r);
    }
    if !cluster_ips.is_empty() {
        // An allocated address on a port it does not serve.
        b.rule(
            CLUSTER_IPS_CHECK,
            vec![
                matches(
                    Operator::EQ,
                    payload("ip", "daddr"),
                    anonymous_set(cluster_ips.iter().map(|ip| text(ip.to_string())).collect()),
                ),
                Statement::Reject(None),
            ],
        );
    }
    if let Some(range) = settings.service_range {
        // An address of the range nobody has: dropped here, never routed off the machine.
        b.rule(
            CLUSTER_IPS_CHECK,
            vec![
                matches(Operator::EQ, payload("ip", "daddr"), prefix(range)),
                Statement::Drop(None),
            ],
        );
    }

    let mut objects = table_reset(&table);
    objects.push(add_table(&table));
    objects.extend(b.chains);
    objects.extend(b.rules);
    Nftables {
        objects: Cow::Owned(objects),
    }
}

fn add_table(table: &str) -> NfObject<'static> {
    NfObject::CmdObject(NfCmd::Add(NfListObject::Table(Table {
        family: NfFamily::IP,
        name: Cow::Owned(table.into()),
        handle: None,
    })))
}

/// Add (a no-op if it exists) then delete: removes the table whether or not it is there.
fn table_reset(table: &str) -> Vec<NfObject<'static>> {
    vec![
        add_table(table),
        NfObject::CmdObject(NfCmd::Delete(NfListObject::Table(Table {
            family: NfFamily::IP,
            name: Cow::Owned(table.into()),
            handle: None,
        }))),
    ]
}

/// The transaction that removes the table (on stop).
pub fn removal(table: &str) -> Nftables<'static> {
    Nftables {
        objects: Cow::Owned(table_reset(table)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            table: "mk8s-unit".into(),
            cluster_cidr: Some("10.1.0.0/16".parse().unwrap()),
            service_range: Some("10.152.183.0/24".parse().unwrap()),
            // TEST-NET-1: no NodePort of these tests could ever match a real packet.
            nodeport_addresses: vec!["192.0.2.1/32".parse().unwrap()],
            masquerade_all: false,
        }
    }

    fn ep(ip: [u8; 4], local: bool) -> Endpoint {
        Endpoint {
            ip: Ipv4Addr::from(ip),
            port: 8080,
            local,
        }
    }

    fn port(name: &str, ip: [u8; 4], endpoints: Vec<Endpoint>) -> ServicePort {
        ServicePort {
            namespace: "default".into(),
            name: name.into(),
            port_name: "http".into(),
            protocol: Protocol::Tcp,
            cluster_ip: Ipv4Addr::from(ip),
            port: 80,
            node_port: None,
            external_ips: vec![],
            affinity_timeout: None,
            external_local: false,
            internal_local: false,
            endpoints,
        }
    }

    fn json(rs: &Nftables) -> String {
        serde_json::to_string(rs).unwrap()
    }

    /// The rules of one chain, as nft JSON.
    fn rules_of(rs: &Nftables, chain: &str) -> Vec<String> {
        rs.objects
            .iter()
            .filter_map(|o| match o {
                NfObject::CmdObject(NfCmd::Add(NfListObject::Rule(r))) if r.chain == chain => {
                    Some(serde_json::to_string(&r.expr).unwrap())
                }
                _ => None,
            })
            .collect()
    }

    fn chains(rs: &Nftables) -> Vec<String> {
        rs.objects
            .iter()
            .filter_map(|o| match o {
                NfObject::CmdObject(NfCmd::Add(NfListObject::Chain(c))) => Some(c.name.to_string()),
                _ => None,
            })
            .collect()
    }

    /// `nft --check`: the kernel validates the whole transaction without committing it.
    fn nft_accepts(rs: &Nftables) {
        let out = std::process::Command::new("nft")
            .args(["-c", "-j", "-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().unwrap().write_all(json(rs).as_bytes())?;
                c.wait_with_output()
            })
            .unwrap();
        assert!(
            out.status.success(),
            "nft rejected the ruleset: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            json(rs)
        );
    }

    #[test]
    fn cidr_parses_and_contains() {
        let c: Cidr = "10.152.183.0/24".parse().unwrap();
        assert!(c.contains(Ipv4Addr::new(10, 152, 183, 77)));
        assert!(!c.contains(Ipv4Addr::new(10, 152, 184, 1)));
        assert!(
            "0.0.0.0/0"
                .parse::<Cidr>()
                .unwrap()
                .contains(Ipv4Addr::new(1, 2, 3, 4))
        );
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("10.0.0.0".parse::<Cidr>().is_err());
        assert!("fd00::/8".parse::<Cidr>().is_err());
    }

    #[test]
    fn empty_cluster_still_guards_the_range() {
        let rs = ruleset(&settings(), &[]);
        // Delete-and-recreate: add, delete, add the table, in one transaction.
        let tables: Vec<&str> = rs
            .objects
            .iter()
            .filter_map(|o| match o {
                NfObject::CmdObject(NfCmd::Add(NfListObject::Table(_))) => Some("add"),
                NfObject::CmdObject(NfCmd::Delete(NfListObject::Table(_))) => Some("delete"),
                _ => None,
            })
            .collect();
        assert_eq!(tables, ["add", "delete", "add"]);
        let check = rules_of(&rs, CLUSTER_IPS_CHECK);
        assert_eq!(check.len(), 1, "{check:?}");
        assert!(
            check[0].contains("\"addr\":\"10.152.183.0\",\"len\":24") && check[0].contains("drop")
        );
        assert!(rules_of(&rs, SERVICES).is_empty());
        nft_accepts(&rs);
    }

    #[test]
    fn cluster_ip_dnats_to_a_random_endpoint() {
        let sp = port(
            "web",
            [10, 152, 183, 20],
            vec![ep([10, 1, 0, 5], true), ep([10, 1, 0, 6], true)],
        );
        let rs = ruleset(&settings(), std::slice::from_ref(&sp));
        let svc = chain_name("service", "default/web/tcp/http");
        let services = rules_of(&rs, SERVICES);
        assert_eq!(services.len(), 1);
        assert!(
            services[0].contains("[\"10.152.183.20\",\"tcp\",80]"),
            "{}",
            services[0]
        );
        assert!(services[0].contains(&svc));
        let dispatch = rules_of(&rs, &svc);
        // Outside the pod network: masquerade; then numgen random mod 2.
        assert!(dispatch[0].contains("\"op\":\"!=\"") && dispatch[0].contains(MARK_FOR_MASQUERADE));
        assert!(
            dispatch[1].contains("\"numgen\":{\"mode\":\"random\",\"mod\":2"),
            "{}",
            dispatch[1]
        );
        let e5 = endpoint_chain(&sp, &sp.endpoints[0]);
        let rules = rules_of(&rs, &e5);
        assert!(
            rules[0].contains("10.1.0.5") && rules[0].contains(MARK_FOR_MASQUERADE),
            "hairpin"
        );
        assert!(
            rules[1].contains("\"dnat\":{\"addr\":\"10.1.0.5\",\"port\":8080}"),
            "{}",
            rules[1]
        );
        assert!(
            json(&rs).contains("\"10.152.183.20\""),
            "in the allocated set"
        );
        assert!(rules_of(&rs, SERVICE_CHECK).is_empty());
        nft_accepts(&rs);
    }

    #[test]
    fn no_endpoints_rejects_and_nodeport_too() {
        let mut sp = port("empty", [10, 152, 183, 21], vec![]);
        sp.node_port = Some(30080);
        let rs = ruleset(&settings(), &[sp]);
        assert!(
            !chains(&rs)
                .iter()
                .any(|c| c.starts_with("service-") && c != SERVICE_CHECK)
        );
        let check = rules_of(&rs, SERVICE_CHECK);
        assert_eq!(check.len(), 1);
        assert!(check[0].contains("[\"10.152.183.21\",\"tcp\",80]") && check[0].contains(REJECT));
        let np = rules_of(&rs, NODEPORT_CHECK);
        assert!(
            np[0].contains("[\"tcp\",30080]") && np[0].contains("192.0.2.1"),
            "{}",
            np[0]
        );
        let reject = rules_of(&rs, REJECT);
        assert!(reject[0].contains("tcp reset"), "{reject:?}");
        nft_accepts(&rs);
    }

    #[test]
    fn nodeport_masquerades_and_local_policy_keeps_source() {
        let mut cluster = port("np", [10, 152, 183, 22], vec![ep([10, 1, 0, 5], true)]);
        cluster.node_port = Some(30081);
        let mut local = port(
            "local",
            [10, 152, 183, 23],
            vec![ep([10, 1, 0, 7], false), ep([10, 1, 0, 8], true)],
        );
        local.node_port = Some(30082);
        local.external_local = true;
        local.external_ips = vec![Ipv4Addr::new(192, 0, 2, 9)];
        let rs = ruleset(&settings(), &[cluster.clone(), local.clone()]);
        let ext = rules_of(&rs, &chain_name("external", "default/np/tcp/http"));
        assert!(ext[0].contains(MARK_FOR_MASQUERADE) && ext[1].contains("goto"));
        let services = rules_of(&rs, SERVICES);
        assert_eq!(services.len(), 2, "cluster IPs, then NodePorts");
        assert!(
            services[0].contains("[\"192.0.2.9\",\"tcp\",80]"),
            "external IP"
        );
        assert!(services[1].contains("\"fib\"") && services[1].contains("[\"tcp\",30081]"));
        let lext = rules_of(&rs, &chain_name("external", "default/local/tcp/http"));
        assert!(
            lext[0].contains("10.1.0.0") && lext[0].contains("goto"),
            "pods keep the cluster view"
        );
        let last = lext.last().unwrap();
        let local_chain = chain_name("local", "default/local/tcp/http");
        assert!(last.contains(&local_chain), "{last}");
        let dispatch = rules_of(&rs, &local_chain);
        assert_eq!(dispatch.len(), 1);
        assert!(dispatch[0].contains("\"mod\":1") && dispatch[0].contains("10.1.0.8"));
        assert!(!dispatch[0].contains("10.1.0.7"), "only the local endpoint");
        nft_accepts(&rs);
    }

    #[test]
    fn internal_local_without_local_endpoints_drops() {
        let mut sp = port("itp", [10, 152, 183, 24], vec![ep([10, 1, 0, 9], false)]);
        sp.internal_local = true;
        let rs = ruleset(&settings(), &[sp]);
        let svc = rules_of(&rs, &chain_name("service", "default/itp/tcp/http"));
        assert_eq!(svc.last().unwrap(), "[{\"drop\":null}]");
        nft_accepts(&rs);
    }

    #[test]
    fn client_ip_affinity_remembers_the_endpoint() {
        let mut sp = port(
            "sticky",
            [10, 152, 183, 25],
            vec![ep([10, 1, 0, 5], true), ep([10, 1, 0, 6], true)],
        );
        sp.affinity_timeout = Some(600);
        let rs = ruleset(&settings(), std::slice::from_ref(&sp));
        let set = affinity_set(&sp, &sp.endpoints[0]);
        let text = json(&rs);
        assert!(text.contains(&format!("\"name\":\"{set}\"")) && text.contains("\"timeout\":600"));
        let svc = rules_of(&rs, &chain_name("service", "default/sticky/tcp/http"));
        assert!(
            svc[1].contains(&format!("@{set}")) && svc[1].contains("goto"),
            "{}",
            svc[1]
        );
        let epr = rules_of(&rs, &endpoint_chain(&sp, &sp.endpoints[0]));
        assert!(
            epr[1].contains("\"update\"") && epr[1].contains(&format!("@{set}")),
            "{}",
            epr[1]
        );
        nft_accepts(&rs);
    }

    #[test]
    fn removal_deletes_only_its_table() {
        let rs = removal("mk8s-x");
        assert_eq!(
            json(&rs),
            "{\"nftables\":[{\"add\":{\"table\":{\"family\":\"ip\",\"name\":\"mk8s-x\"}}},{\"delete\":{\"table\":{\"family\":\"ip\",\"name\":\"mk8s-x\"}}}]}"
        );
    }
}
