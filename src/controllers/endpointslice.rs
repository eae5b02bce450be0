//! Upstream's EndpointSlice controller: discovery.k8s.io/v1 EndpointSlices (`IPv4`, named
//! `<service>-<random>`) listing the pods a Service selects, with their ready / serving /
//! terminating conditions, node, target reference and the Service's ports as each pod resolves
//! them; at most 100 endpoints a slice, one set of slices for each distinct set of ports, and
//! an empty placeholder slice when nothing is selected.
//!
//! Owns the slices labelled `endpointslice.kubernetes.io/managed-by:
//! endpointslice-controller.k8s.io`; never touches other slices (the API server's for
//! `kubernetes`, a user's for a Service without selector), pods or Services. Slices carry a
//! controller ownerReference to their Service, so the garbage collector removes them with it,
//! as upstream relies on. The pod → endpoint rules are [`super::endpoints`]'s, shared with the
//! Endpoints controller.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use kube::api::{DeleteParams, ListParams, ObjectMeta, PostParams};
use kube::runtime::controller::{Action, Config as RunConfig, Controller};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};

use super::endpoints::{
    PodAddress, ResolvedPort, TRIGGER_TIME, endpoints_labels, has_selector, pod_addresses,
    selected_pods, service_key, services_of, trigger_time,
};
use super::metrics::Metrics;
use super::replicaset::controller_ref;
use super::root_ca::namespace_gone;
use super::{Backoff, log_outcome};
use crate::common::events;

pub const NAME: &str = "endpointslice-controller";
pub const ALIAS: &str = "endpointslice";
const QUEUE: &str = "endpoint_slice";

/// The label naming a slice's Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The label naming a slice's manager, and our value of it.
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "endpointslice-controller.k8s.io";
/// Upstream's `--max-endpoints-per-slice` default.
const MAX_ENDPOINTS_PER_SLICE: usize = 100;
const ADDRESS_TYPE: &str = "IPv4";

#[derive(Debug, thiserror::Error)]
pub enum EndpointSliceError {
    #[error("endpoint slices of service {namespace}/{name}: {cause}")]
    Api {
        namespace: String,
        name: String,
        cause: kube::Error,
    },
}

/// A slice's ports in the same shape as a pod's resolved ports, sorted: the key that groups
/// endpoints into slices.
type PortKey = Vec<ResolvedPort>;

fn port_key(slice: &EndpointSlice) -> PortKey {
    let mut key: PortKey = slice
        .ports
        .iter()
        .flatten()
        .map(|p| ResolvedPort {
            name: p.name.clone().unwrap_or_default(),
            port: p.port.unwrap_or_default(),
            protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
            app_protocol: p.app_protocol.clone(),
        })
        .collect();
    key.sort();
    key
}

fn slice_ports(key: &PortKey) -> Vec<EndpointPort> {
    key.iter()
        .map(|p| EndpointPort {
            name: Some(p.name.clone()),
            port: Some(p.port),
            protocol: Some(p.protocol.clone()),
            app_protocol: p.app_protocol.clone(),
        })
        .collect()
}

fn endpoint(svc: &Service, a: &PodAddress) -> Endpoint {
    let publish_not_ready = svc
        .spec
        .as_ref()
        .and_then(|s| s.publish_not_ready_addresses)
        .unwrap_or(false);
    // Upstream: never ready while terminating, unless not-ready addresses are published.
    let ready = publish_not_ready || (a.serving && !a.terminating);
    Endpoint {
        addresses: vec![a.ip.clone()],
        conditions: Some(EndpointConditions {
            ready: Some(ready),
            serving: Some(a.serving),
            terminating: Some(a.terminating),
        }),
        hostname: a.hostname.clone(),
        node_name: a.node_name.clone(),
        target_ref: Some(a.target_ref.clone()),
        ..Default::default()
    }
}

/// The labels a Service's slices carry: the Service's own, the headless mark, and the two
/// reserved ones.
fn slice_labels(svc: &Service) -> BTreeMap<String, String> {
    let mut labels = endpoints_labels(svc);
    labels.insert(SERVICE_NAME_LABEL.into(), svc.name_any());
    labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY.into());
    labels
}

/// What a sync writes.
#[derive(Debug, Default)]
struct Plan {
    create: Vec<EndpointSlice>,
    update: Vec<EndpointSlice>,
    delete: Vec<EndpointSlice>,
}

fn new_slice(svc: &Service, key: &PortKey, endpoints: Vec<Endpoint>) -> EndpointSlice {
    EndpointSlice {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", svc.name_any())),
            namespace: svc.namespace(),
            labels: Some(slice_labels(svc)),
            owner_references: Some(vec![controller_ref(svc)]),
            ..Default::default()
        },
        address_type: ADDRESS_TYPE.into(),
        endpoints,
        ports: (!key.is_empty()).then(|| slice_ports(key)),
    }
}

fn owned_by(slice: &EndpointSlice, svc: &Service) -> bool {
    slice
        .owner_references()
        .iter()
        .any(|r| r.kind == "Service" && Some(&r.uid) == svc.metadata.uid.as_ref())
}

/// Upstream's reconcile, in its essentials: keep each existing slice's endpoints that are still
/// wanted (updated in place), drop the rest, fill slices that have room before creating new
/// ones, delete slices left empty or with ports no longer used, and keep one empty placeholder
/// when the Service selects nothing.
fn plan(svc: &Service, addrs: &[PodAddress], existing: Vec<EndpointSlice>) -> Plan {
    let labels = slice_labels(svc);
    let mut desired: BTreeMap<PortKey, BTreeMap<String, Endpoint>> = BTreeMap::new();
    for a in addrs {
        let mut key = a.ports.clone();
        key.sort();
        desired
            .entry(key)
            .or_default()
            .insert(a.ip.clone(), endpoint(svc, a));
    }
    let mut plan = Plan::default();
    // Slices kept (changed or not), with whether they changed.
    let mut kept: Vec<(EndpointSlice, bool)> = Vec::new();
    let mut existing = existing;
    existing.sort_by_key(|s| s.name_any());
    for mut slice in existing {
        if !owned_by(&slice, svc) || slice.address_type != ADDRESS_TYPE {
            plan.delete.push(slice);
            continue;
        }
        let key = port_key(&slice);
        let Some(wanted) = desired.get_mut(&key) else {
            plan.delete.push(slice);
            continue;
        };
        let mut changed = slice.labels() != &labels;
        let before = std::mem::take(&mut slice.endpoints);
        for ep in before {
            let ip = ep.addresses.first().cloned().unwrap_or_default();
            match wanted.remove(&ip) {
                Some(want) => {
                    changed |= want != ep;
                    slice.endpoints.push(want);
                }
                None => changed = true,
            }
        }
        if slice.endpoints.is_empty() {
            plan.delete.push(slice);
        } else {
            kept.push((slice, changed));
        }
    }
    for (key, wanted) in desired {
        let mut rest: Vec<Endpoint> = wanted.into_values().collect();
        for (slice, changed) in kept.iter_mut().filter(|(s, _)| port_key(s) == key) {
            let room = MAX_ENDPOINTS_PER_SLICE.saturating_sub(slice.endpoints.len());
            if room == 0 || rest.is_empty() {
                continue;
            }
            let take = room.min(rest.len());
            slice.endpoints.extend(rest.drain(..take));
            *changed = true;
        }
        while !rest.is_empty() {
            let take = MAX_ENDPOINTS_PER_SLICE.min(rest.len());
            let chunk: Vec<Endpoint> = rest.drain(..take).collect();
            plan.create.push(new_slice(svc, &key, chunk));
        }
    }
    let mut unchanged = 0;
    for (mut slice, changed) in kept {
        if changed {
            slice.metadata.labels = Some(labels.clone());
            plan.update.push(slice);
        } else {
            unchanged += 1;
        }
    }
    if plan.create.is_empty() && plan.update.is_empty() && unchanged == 0 {
        // Nothing selected: reuse an existing empty placeholder, else make one.
        let placeholder = plan.delete.iter().position(|s| {
            owned_by(s, svc)
                && s.address_type == ADDRESS_TYPE
                && s.endpoints.is_empty()
                && s.ports.as_ref().is_none_or(Vec::is_empty)
        });
        match placeholder {
            Some(i) => {
                let mut s = plan.delete.remove(i);
                if s.labels() != &labels {
                    s.metadata.labels = Some(labels);
                    plan.update.push(s);
                }
            }
            None => plan.create.push(new_slice(svc, &Vec::new(), Vec::new())),
        }
    }
    plan
}

struct Ctx {
    client: kube::Client,
    backoff: Backoff,
}

fn api_err(svc: &Service) -> impl Fn(kube::Error) -> EndpointSliceError + '_ {
    move |cause| EndpointSliceError::Api {
        namespace: svc.namespace().unwrap_or_default(),
        name: svc.name_any(),
        cause,
    }
}

async fn sync(svc: &Service, ctx: &Ctx) -> Result<(), EndpointSliceError> {
    if !has_selector(svc) || svc.metadata.deletion_timestamp.is_some() {
        return Ok(());
    }
    let ns = svc.namespace().unwrap_or_default();
    let pods: Vec<Pod> = selected_pods(&ctx.client, svc)
        .await
        .map_err(api_err(svc))?;
    let addrs = pod_addresses(svc, &pods, true);
    let api: Api<EndpointSlice> = Api::namespaced(ctx.client.clone(), &ns);
    let lp = ListParams::default().labels(&format!(
        "{SERVICE_NAME_LABEL}={},{MANAGED_BY_LABEL}={MANAGED_BY}",
        svc.name_any()
    ));
    let existing = api.list(&lp).await.map_err(api_err(svc))?.items;
    let plan = plan(svc, &addrs, existing);
    let trigger = trigger_time(svc, &pods);
    let stamp = |s: &mut EndpointSlice| {
        let a = s.annotations_mut();
        match &trigger {
            Some(t) => a.insert(TRIGGER_TIME.into(), t.clone()),
            None => a.remove(TRIGGER_TIME),
        };
    };
    let pp = PostParams::default();
    let mut failure = None;
    for mut s in plan.create {
        stamp(&mut s);
        match api.create(&pp, &s).await {
            Ok(_) => {}
            Err(e) if namespace_gone(&e) => return Ok(()),
            Err(e) => failure = failure.or(Some(e)),
        }
    }
    for mut s in plan.update {
        stamp(&mut s);
        match api.replace(&s.name_any(), &pp, &s).await {
            Ok(_) => {}
            Err(kube::Error::Api(st)) if st.code == 404 => {}
            Err(e) => failure = failure.or(Some(e)),
        }
    }
    for s in plan.delete {
        let dp = DeleteParams {
            preconditions: Some(kube::api::Preconditions {
                uid: s.uid(),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(&s.name_any(), &dp).await {
            Ok(_) => {}
            Err(kube::Error::Api(st)) if st.code == 404 || st.code == 409 => {}
            Err(e) => failure = failure.or(Some(e)),
        }
    }
    match failure {
        None => Ok(()),
        Some(e) => {
            events::record(
                &ctx.client,
                NAME,
                svc,
                false,
                "FailedToUpdateEndpointSlices",
                &format!(
                    "Error updating Endpoint Slices for Service {ns}/{}: {e}",
                    svc.name_any()
                ),
            )
            .await;
            Err(api_err(svc)(e))
        }
    }
}

async fn reconcile(svc: Arc<Service>, ctx: Arc<Ctx>) -> Result<Action, EndpointSliceError> {
    let result = sync(&svc, &ctx).await.map(|()| None::<Duration>);
    ctx.backoff.settle(NAME, &service_key(&svc), result)
}

fn error_policy(svc: Arc<Service>, e: &EndpointSliceError, ctx: Arc<Ctx>) -> Action {
    ctx.backoff
        .retry(&service_key(&svc), "endpoint slice sync failed", e)
}

/// Runs until the watch streams end (they do not, short of shutdown).
pub async fn run(client: kube::Client, metrics: Arc<Metrics>, concurrency: u16) {
    let services: Api<Service> = Api::all(client.clone());
    let pods: Api<Pod> = Api::all(client.clone());
    let slices: Api<EndpointSlice> = Api::all(client.clone());
    let ctx = Arc::new(Ctx {
        client,
        backoff: Backoff::new(QUEUE, metrics),
    });
    let controller = Controller::new(services, watcher::Config::default());
    let store = controller.store();
    controller
        .owns(
            slices,
            watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY}")),
        )
        .watches(pods, watcher::Config::default(), move |pod| {
            services_of(&store, &pod)
        })
        .with_config(RunConfig::default().concurrency(concurrency))
        .run(reconcile, error_policy, ctx)
        .for_each(|r| log_outcome(NAME, r))
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::endpoints::tests::{pod, port, service};
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    fn svc() -> Service {
        let mut s = service(vec![port("web", 80, IntOrString::String("http".into()))]);
        s.metadata.uid = Some("svc-uid".into());
        s
    }

    fn pods(n: usize, ready: bool) -> Vec<Pod> {
        (0..n)
            .map(|i| {
                let ip = format!("10.1.{}.{}", i / 200, i % 200 + 1);
                pod(&format!("p{i}"), Some(&ip), ready, 8080)
            })
            .collect()
    }

    /// Applies a plan as the API server would, naming created slices.
    fn apply(existing: Vec<EndpointSlice>, plan: Plan) -> Vec<EndpointSlice> {
        let gone: Vec<String> = plan.delete.iter().map(|s| s.name_any()).collect();
        let updated: BTreeMap<String, EndpointSlice> =
            plan.update.into_iter().map(|s| (s.name_any(), s)).collect();
        let mut out: Vec<EndpointSlice> = existing
            .into_iter()
            .filter(|s| !gone.contains(&s.name_any()))
            .map(|s| updated.get(&s.name_any()).cloned().unwrap_or(s))
            .collect();
        for (i, mut s) in plan.create.into_iter().enumerate() {
            s.metadata.name = Some(format!("web-new{}-{i}", out.len()));
            out.push(s);
        }
        out
    }

    #[test]
    fn slices_hold_at_most_100_and_converge() {
        let svc = svc();
        let addrs = pod_addresses(&svc, &pods(250, true), true);
        let p = plan(&svc, &addrs, vec![]);
        assert_eq!(p.create.len(), 3);
        let sizes: Vec<usize> = p.create.iter().map(|s| s.endpoints.len()).collect();
        assert_eq!(sizes, [100, 100, 50]);
        let s = &p.create[0];
        assert_eq!(s.address_type, "IPv4");
        assert_eq!(s.metadata.generate_name.as_deref(), Some("web-"));
        assert_eq!(s.labels()[SERVICE_NAME_LABEL], "web");
        assert_eq!(s.labels()[MANAGED_BY_LABEL], MANAGED_BY);
        assert_eq!(s.labels()["team"], "a");
        let owner = &s.owner_references()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.controller),
            ("Service", Some(true))
        );
        let ports = s.ports.as_ref().unwrap();
        assert_eq!(
            (ports[0].name.as_deref(), ports[0].port),
            (Some("web"), Some(8080))
        );
        let slices = apply(vec![], p);
        // The same state again: nothing to write.
        let again = plan(&svc, &addrs, slices.clone());
        assert!(again.create.is_empty() && again.update.is_empty() && again.delete.is_empty());
        // Scale down to 120: a slice empties and goes, the rest shrink in place.
        let addrs = pod_addresses(&svc, &pods(120, true), true);
        let p = plan(&svc, &addrs, slices.clone());
        assert!(p.create.is_empty(), "{:?}", p.create);
        let slices = apply(slices, p);
        let total: usize = slices.iter().map(|s| s.endpoints.len()).sum();
        assert_eq!(total, 120);
        assert!(slices.iter().all(|s| s.endpoints.len() <= 100));
    }

    #[test]
    fn readiness_and_termination_become_conditions() {
        let svc = svc();
        let mut ps = pods(2, true);
        ps.push(pod("slow", Some("10.1.9.9"), false, 8080));
        ps[1].metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::now(),
            ));
        let p = plan(&svc, &pod_addresses(&svc, &ps, true), vec![]);
        let conds: BTreeMap<String, (bool, bool, bool)> = p.create[0]
            .endpoints
            .iter()
            .map(|e| {
                let c = e.conditions.clone().unwrap();
                (
                    e.target_ref.as_ref().unwrap().name.clone().unwrap(),
                    (c.ready.unwrap(), c.serving.unwrap(), c.terminating.unwrap()),
                )
            })
            .collect();
        assert_eq!(conds["p0"], (true, true, false));
        assert_eq!(conds["p1"], (false, true, true));
        assert_eq!(conds["slow"], (false, false, false));
        assert_eq!(p.create[0].endpoints[0].node_name.as_deref(), Some("n1"));
    }

    #[test]
    fn nothing_selected_keeps_one_placeholder() {
        let svc = svc();
        let p = plan(&svc, &[], vec![]);
        assert_eq!(p.create.len(), 1);
        assert!(p.create[0].endpoints.is_empty() && p.create[0].ports.is_none());
        let slices = apply(vec![], p);
        let again = plan(&svc, &[], slices.clone());
        assert!(again.create.is_empty() && again.update.is_empty() && again.delete.is_empty());
        // Pods arrive: the placeholder goes, a real slice comes.
        let addrs = pod_addresses(&svc, &pods(1, true), true);
        let p = plan(&svc, &addrs, slices);
        assert_eq!((p.create.len(), p.delete.len()), (1, 1));
    }

    #[test]
    fn slices_of_another_service_instance_are_deleted() {
        let svc = svc();
        let mut old = new_slice(&svc, &Vec::new(), vec![]);
        old.metadata.name = Some("web-old".into());
        old.metadata.owner_references.as_mut().unwrap()[0].uid = "previous".into();
        let p = plan(&svc, &pod_addresses(&svc, &pods(1, true), true), vec![old]);
        assert_eq!(p.delete.len(), 1);
        assert_eq!(p.create.len(), 1);
    }
}
