//! Upstream's endpoints controller: a core/v1 Endpoints object, named as its Service, listing
//! the addresses of the pods the Service selects (ready ones in `addresses`, the others in
//! `notReadyAddresses`) for each port the pods resolve; deleted when the Service goes.
//!
//! Owns the Endpoints of Services that have a selector, and the pod → address rules the
//! EndpointSlice controller shares ([`pod_addresses`] and friends). Never touches the
//! Endpoints of Services without a selector (user-managed, like the API server's own
//! `kubernetes`), nor pods or Services.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, ObjectReference, Pod, Service,
    ServicePort,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{DeleteParams, ListParams, ObjectMeta, PostParams};
use kube::runtime::controller::{Action, Config as RunConfig, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};

use super::metrics::Metrics;
use super::root_ca::namespace_gone;
use super::{Backoff, log_outcome};
use crate::common::events;

pub const NAME: &str = "endpoints-controller";
pub const ALIAS: &str = "endpoint";
const QUEUE: &str = "endpoint";

/// When the last change the published addresses reflect happened (upstream's
/// `v1.EndpointsLastChangeTriggerTime`).
pub(super) const TRIGGER_TIME: &str = "endpoints.kubernetes.io/last-change-trigger-time";
/// Set when the Endpoints holds fewer addresses than the Service selects.
const OVER_CAPACITY: &str = "endpoints.kubernetes.io/over-capacity";
/// Upstream's `maxCapacity`: addresses one Endpoints object holds at most.
const MAX_ADDRESSES: usize = 1000;
/// The label marking Endpoints and slices of headless Services.
pub(super) const HEADLESS: &str = "service.kubernetes.io/headless";
/// Endpoints carrying this annotation are leader-election locks, not a Service's.
const LEADER_ANNOTATION: &str = "control-plane.alpha.kubernetes.io/leader";

#[derive(Debug, thiserror::Error)]
pub enum EndpointsError {
    #[error("endpoints {namespace}/{name}: {cause}")]
    Api {
        namespace: String,
        name: String,
        cause: kube::Error,
    },
}

/// One service port as a pod serves it: the Service port's name, protocol and appProtocol with
/// the pod's port number.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct ResolvedPort {
    pub name: String,
    pub port: i32,
    pub protocol: String,
    pub app_protocol: Option<String>,
}

/// What the endpoints and EndpointSlice controllers publish about one pod behind a Service.
#[derive(Debug, Clone)]
pub(super) struct PodAddress {
    pub ip: String,
    pub node_name: Option<String>,
    pub hostname: Option<String>,
    pub target_ref: ObjectReference,
    /// The pod's Ready condition is True.
    pub serving: bool,
    pub terminating: bool,
    /// The Service's ports this pod resolves, in the Service's order.
    pub ports: Vec<ResolvedPort>,
}

/// Upstream's `IsPodReady`.
pub(super) fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn pod_terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// The pod's IPv4 address (our clusters are IPv4 single-stack, so slices are `IPv4`).
fn pod_ipv4(pod: &Pod) -> Option<String> {
    let status = pod.status.as_ref()?;
    status
        .pod_ips
        .iter()
        .flatten()
        .map(|p| p.ip.as_str())
        .chain(status.pod_ip.as_deref())
        .find(|ip| !ip.is_empty() && !ip.contains(':'))
        .map(str::to_string)
}

/// Upstream's `ShouldPodBeInEndpoints`: not terminal, has an IP, and not being deleted unless
/// terminating pods are included.
fn belongs_in_endpoints(pod: &Pod, include_terminating: bool) -> bool {
    !pod_terminal(pod)
        && pod_ipv4(pod).is_some()
        && (include_terminating || pod.metadata.deletion_timestamp.is_none())
}

/// Upstream's `FindPort`: a named targetPort is looked up among the pod's container ports of
/// the same protocol (sidecar init containers too); a number is taken as is.
pub(super) fn find_port(pod: &Pod, sp: &ServicePort) -> Option<i32> {
    let protocol = sp.protocol.as_deref().unwrap_or("TCP");
    match sp.target_port.as_ref() {
        None => Some(sp.port),
        Some(IntOrString::Int(n)) => Some(*n),
        Some(IntOrString::String(name)) => {
            let spec = pod.spec.as_ref()?;
            let sidecars = spec
                .init_containers
                .iter()
                .flatten()
                .filter(|c| c.restart_policy.as_deref() == Some("Always"));
            spec.containers
                .iter()
                .chain(sidecars)
                .flat_map(|c| c.ports.iter().flatten())
                .find(|p| {
                    p.name.as_deref() == Some(name.as_str())
                        && p.protocol.as_deref().unwrap_or("TCP") == protocol
                })
                .map(|p| p.container_port)
        }
    }
}

fn target_ref(pod: &Pod) -> ObjectReference {
    ObjectReference {
        kind: Some("Pod".into()),
        namespace: pod.namespace(),
        name: Some(pod.name_any()),
        uid: pod.uid(),
        ..Default::default()
    }
}

/// The pods `svc` selects, as the addresses both controllers publish; `include_terminating`
/// keeps pods being deleted (slices always do, Endpoints only with publishNotReadyAddresses).
pub(super) fn pod_addresses(
    svc: &Service,
    pods: &[Pod],
    include_terminating: bool,
) -> Vec<PodAddress> {
    let spec = svc.spec.clone().unwrap_or_default();
    let mut out = Vec::new();
    for pod in pods {
        if !belongs_in_endpoints(pod, include_terminating) {
            continue;
        }
        let Some(ip) = pod_ipv4(pod) else { continue };
        let pspec = pod.spec.as_ref();
        let hostname = pspec
            .and_then(|s| s.hostname.clone())
            .filter(|h| !h.is_empty())
            .filter(|_| {
                pspec.and_then(|s| s.subdomain.as_deref()) == Some(svc.name_any().as_str())
                    && pod.namespace() == svc.namespace()
            });
        let ports = spec
            .ports
            .iter()
            .flatten()
            .filter_map(|sp| {
                let port = find_port(pod, sp);
                if port.is_none() {
                    tracing::debug!(
                        pod = pod.name_any(),
                        service = svc.name_any(),
                        "no suitable port for service port {:?}",
                        sp.name
                    );
                }
                Some(ResolvedPort {
                    name: sp.name.clone().unwrap_or_default(),
                    port: port?,
                    protocol: sp.protocol.clone().unwrap_or_else(|| "TCP".into()),
                    app_protocol: sp.app_protocol.clone(),
                })
            })
            .collect();
        out.push(PodAddress {
            ip,
            node_name: pspec
                .and_then(|s| s.node_name.clone())
                .filter(|n| !n.is_empty()),
            hostname,
            target_ref: target_ref(pod),
            serving: pod_ready(pod),
            terminating: pod.metadata.deletion_timestamp.is_some(),
            ports,
        });
    }
    out
}

/// Whether `svc` selects pods at all: upstream leaves Services without a selector to their
/// users (and their own Endpoints, such as the API server's `kubernetes`).
pub(super) fn has_selector(svc: &Service) -> bool {
    svc.spec.as_ref().is_some_and(|s| s.selector.is_some())
}

/// Whether `svc` is headless (`clusterIP: None`).
pub(super) fn headless(svc: &Service) -> bool {
    svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None")
}

/// The pods in the Service's namespace its selector matches (an empty selector matches every
/// pod, as upstream's `labels.Set{}.AsSelector()`).
pub(super) async fn selected_pods(
    client: &kube::Client,
    svc: &Service,
) -> Result<Vec<Pod>, kube::Error> {
    let selector = svc
        .spec
        .as_ref()
        .and_then(|s| s.selector.clone())
        .unwrap_or_default();
    let labels: Vec<String> = selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let api: Api<Pod> = Api::namespaced(client.clone(), &svc.namespace().unwrap_or_default());
    Ok(api
        .list(&ListParams::default().labels(&labels.join(",")))
        .await?
        .items)
}

/// The Services that select a pod, for re-syncing them when it changes.
pub(super) fn services_of(store: &Store<Service>, pod: &Pod) -> Vec<ObjectRef<Service>> {
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    store
        .state()
        .iter()
        .filter(|s| s.namespace() == pod.namespace())
        .filter(|s| {
            s.spec
                .as_ref()
                .and_then(|s| s.selector.as_ref())
                .is_some_and(|sel| sel.iter().all(|(k, v)| labels.get(k) == Some(v)))
        })
        .map(|s| ObjectRef::from_obj(s.as_ref()))
        .collect()
}

/// The last change to the Service or its pods that the addresses reflect (creation, readiness
/// flip, deletion start), as the trigger-time annotation's RFC 3339 value. Upstream tracks the
/// first unprocessed change instead; without an informer history the latest known one is the
/// closest observable value.
pub(super) fn trigger_time(svc: &Service, pods: &[Pod]) -> Option<String> {
    let pod_times = pods.iter().flat_map(|p| {
        let conds = p
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .filter(|c| c.type_ == "Ready")
            .filter_map(|c| c.last_transition_time.as_ref());
        p.metadata
            .creation_timestamp
            .iter()
            .chain(p.metadata.deletion_timestamp.iter())
            .chain(conds)
            .map(|t| t.0)
            .collect::<Vec<_>>()
    });
    svc.metadata
        .creation_timestamp
        .iter()
        .map(|t| t.0)
        .chain(pod_times)
        .max()
        .map(|t| t.to_string())
}

/// The labels the Service's Endpoints (and slices, which add their own) carry: the Service's
/// own, plus the headless mark.
pub(super) fn endpoints_labels(svc: &Service) -> BTreeMap<String, String> {
    let mut labels = svc.labels().clone();
    if headless(svc) {
        labels.insert(HEADLESS.into(), String::new());
    } else {
        labels.remove(HEADLESS);
    }
    labels
}

/// The subsets upstream's `RepackSubsets` makes: one subset for each distinct set of ports,
/// addresses sorted by IP; and whether addresses were dropped for capacity.
fn subsets(svc: &Service, addrs: &[PodAddress]) -> (Vec<EndpointSubset>, bool) {
    let publish_not_ready = svc
        .spec
        .as_ref()
        .and_then(|s| s.publish_not_ready_addresses)
        .unwrap_or(false);
    let no_ports = svc
        .spec
        .as_ref()
        .is_none_or(|s| s.ports.as_ref().is_none_or(Vec::is_empty));
    // Ports key → (ready addresses, not-ready addresses).
    type Group = (Vec<EndpointAddress>, Vec<EndpointAddress>);
    let mut groups: BTreeMap<Vec<ResolvedPort>, Group> = BTreeMap::new();
    let mut kept = 0usize;
    let mut truncated = false;
    let mut ordered: Vec<&PodAddress> = addrs.iter().collect();
    // Ready addresses are kept first when over capacity.
    ordered.sort_by_key(|a| !(publish_not_ready || a.serving));
    for a in ordered {
        if a.ports.is_empty() && !(no_ports && headless(svc)) {
            continue;
        }
        if kept == MAX_ADDRESSES {
            truncated = true;
            continue;
        }
        kept += 1;
        let mut ports = a.ports.clone();
        ports.sort();
        let address = EndpointAddress {
            ip: a.ip.clone(),
            hostname: a.hostname.clone(),
            node_name: a.node_name.clone(),
            target_ref: Some(a.target_ref.clone()),
        };
        let g = groups.entry(ports).or_default();
        if publish_not_ready || a.serving {
            g.0.push(address);
        } else {
            g.1.push(address);
        }
    }
    let out = groups
        .into_iter()
        .map(|(ports, (mut ready, mut not_ready))| {
            ready.sort_by(|a, b| a.ip.cmp(&b.ip));
            not_ready.sort_by(|a, b| a.ip.cmp(&b.ip));
            EndpointSubset {
                addresses: (!ready.is_empty()).then_some(ready),
                not_ready_addresses: (!not_ready.is_empty()).then_some(not_ready),
                ports: (!ports.is_empty()).then(|| {
                    ports
                        .into_iter()
                        .map(|p| EndpointPort {
                            name: Some(p.name).filter(|n| !n.is_empty()),
                            port: p.port,
                            protocol: Some(p.protocol),
                            app_protocol: p.app_protocol,
                        })
                        .collect()
                }),
            }
        })
        .collect();
    (out, truncated)
}

/// Subsets as compared: the server may return an empty list where we send none.
fn normalized(s: Option<&Vec<EndpointSubset>>) -> &[EndpointSubset] {
    s.map(Vec::as_slice).unwrap_or(&[])
}

struct Ctx {
    client: kube::Client,
    backoff: Backoff,
}

fn api_err(svc: &Service) -> impl Fn(kube::Error) -> EndpointsError + '_ {
    move |cause| EndpointsError::Api {
        namespace: svc.namespace().unwrap_or_default(),
        name: svc.name_any(),
        cause,
    }
}

async fn sync(svc: &Service, ctx: &Ctx) -> Result<(), EndpointsError> {
    if !has_selector(svc) {
        return Ok(());
    }
    let ns = svc.namespace().unwrap_or_default();
    let name = svc.name_any();
    let pods = selected_pods(&ctx.client, svc)
        .await
        .map_err(api_err(svc))?;
    let publish_not_ready = svc
        .spec
        .as_ref()
        .and_then(|s| s.publish_not_ready_addresses)
        .unwrap_or(false);
    let addrs = pod_addresses(svc, &pods, publish_not_ready);
    let (subsets, truncated) = subsets(svc, &addrs);
    let labels = endpoints_labels(svc);
    let api: Api<Endpoints> = Api::namespaced(ctx.client.clone(), &ns);
    let current = api.get_opt(&name).await.map_err(api_err(svc))?;
    if let Some(cur) = &current {
        let mut cur_labels = cur.labels().clone();
        cur_labels.remove(HEADLESS);
        let mut want_labels = labels.clone();
        want_labels.remove(HEADLESS);
        let capacity_ok = cur.annotations().get(OVER_CAPACITY).map(String::as_str)
            == truncated.then_some("truncated");
        if normalized(cur.subsets.as_ref()) == subsets.as_slice()
            && cur_labels == want_labels
            && capacity_ok
        {
            return Ok(());
        }
    }
    let mut ep = current.clone().unwrap_or_else(|| Endpoints {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(ns.clone()),
            ..Default::default()
        },
        subsets: None,
    });
    ep.subsets = (!subsets.is_empty()).then_some(subsets);
    ep.metadata.labels = Some(labels);
    let annotations = ep.annotations_mut();
    match trigger_time(svc, &pods) {
        Some(t) => annotations.insert(TRIGGER_TIME.into(), t),
        None => annotations.remove(TRIGGER_TIME),
    };
    if truncated {
        annotations.insert(OVER_CAPACITY.into(), "truncated".into());
    } else {
        annotations.remove(OVER_CAPACITY);
    }
    let pp = PostParams::default();
    let (result, verb) = match current {
        Some(_) => (api.replace(&name, &pp, &ep).await, "update"),
        None => (api.create(&pp, &ep).await, "create"),
    };
    match result {
        Ok(_) => Ok(()),
        // A terminating namespace refuses new objects; its Services are going too.
        Err(e) if verb == "create" && namespace_gone(&e) => Ok(()),
        Err(e) => {
            let (reason, what) = match verb {
                "create" => ("FailedToCreateEndpoint", "create"),
                _ => ("FailedToUpdateEndpoint", "update"),
            };
            events::record(
                &ctx.client,
                NAME,
                svc,
                false,
                reason,
                &format!("Failed to {what} endpoint for service {ns}/{name}: {e}"),
            )
            .await;
            Err(api_err(svc)(e))
        }
    }
}

/// A Service's `namespace/name`, the back-off key of both controllers.
pub(super) fn service_key(svc: &Service) -> String {
    format!("{}/{}", svc.namespace().unwrap_or_default(), svc.name_any())
}

async fn reconcile(svc: Arc<Service>, ctx: Arc<Ctx>) -> Result<Action, EndpointsError> {
    let result = sync(&svc, &ctx).await.map(|()| None::<Duration>);
    ctx.backoff.settle(NAME, &service_key(&svc), result)
}

fn error_policy(svc: Arc<Service>, e: &EndpointsError, ctx: Arc<Ctx>) -> Action {
    ctx.backoff
        .retry(&service_key(&svc), "endpoints sync failed", e)
}

/// Deletes the Endpoints named `ns/name` unless its Service exists (again) or it is a
/// leader-election lock; as upstream's sync of a Service that is gone.
async fn delete_orphan(client: &kube::Client, ep: &Endpoints) {
    if ep.annotations().contains_key(LEADER_ANNOTATION) {
        return;
    }
    let ns = ep.namespace().unwrap_or_default();
    let name = ep.name_any();
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    match services.get_opt(&name).await {
        Ok(None) => {}
        Ok(Some(_)) => return,
        Err(e) => {
            tracing::warn!(error = %e, "endpoints {ns}/{name}: cannot read its service");
            return;
        }
    }
    let api: Api<Endpoints> = Api::namespaced(client.clone(), &ns);
    let dp = DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            uid: ep.uid(),
            resource_version: None,
        }),
        ..Default::default()
    };
    match api.delete(&name, &dp).await {
        Ok(_) => tracing::info!("deleted endpoints {ns}/{name}: its service is gone"),
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
        Err(e) => tracing::warn!(error = %e, "cannot delete endpoints {ns}/{name}"),
    }
}

/// Removes the Endpoints of Services that are deleted: on each delete event, and after every
/// (re)list any left over from deletions missed while not watching (upstream's
/// `checkLeftoverEndpoints`).
async fn remove_leftovers(client: kube::Client) {
    let services: Api<Service> = Api::all(client.clone());
    watcher(services, watcher::Config::default())
        .default_backoff()
        .for_each(|ev| {
            let client = client.clone();
            async move {
                match ev {
                    Ok(watcher::Event::Delete(svc)) => {
                        let api: Api<Endpoints> =
                            Api::namespaced(client.clone(), &svc.namespace().unwrap_or_default());
                        if let Ok(Some(ep)) = api.get_opt(&svc.name_any()).await {
                            delete_orphan(&client, &ep).await;
                        }
                    }
                    Ok(watcher::Event::InitDone) => {
                        let api: Api<Endpoints> = Api::all(client.clone());
                        match api.list(&ListParams::default()).await {
                            Ok(list) => {
                                for ep in &list.items {
                                    delete_orphan(&client, ep).await;
                                }
                            }
                            Err(e) => tracing::warn!(error = %e, "cannot list endpoints"),
                        }
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "service watch failed; retrying"),
                }
            }
        })
        .await;
}

/// Runs until the watch streams end (they do not, short of shutdown).
pub async fn run(client: kube::Client, metrics: Arc<Metrics>, concurrency: u16) {
    let services: Api<Service> = Api::all(client.clone());
    let pods: Api<Pod> = Api::all(client.clone());
    let endpoints: Api<Endpoints> = Api::all(client.clone());
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        backoff: Backoff::new(QUEUE, metrics),
    });
    let controller = Controller::new(services, watcher::Config::default());
    let store = controller.store();
    let sync = controller
        .watches(pods, watcher::Config::default(), move |pod| {
            services_of(&store, &pod)
        })
        // An Endpoints edited or deleted by someone else is put back.
        .watches(endpoints, watcher::Config::default(), |ep| {
            Some(
                ObjectRef::<Service>::new(&ep.name_any())
                    .within(&ep.namespace().unwrap_or_default()),
            )
        })
        .with_config(RunConfig::default().concurrency(concurrency))
        .run(reconcile, error_policy, ctx)
        .for_each(|r| log_outcome(NAME, r));
    futures::join!(sync, remove_leftovers(client));
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        Container, ContainerPort, PodCondition, PodIP, PodSpec, PodStatus, ServiceSpec,
    };

    pub(crate) fn service(ports: Vec<ServicePort>) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("default".into()),
                labels: Some([("team".to_string(), "a".to_string())].into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                selector: Some([("app".to_string(), "web".to_string())].into()),
                ports: Some(ports),
                ..Default::default()
            }),
            status: None,
        }
    }

    pub(crate) fn port(name: &str, port: i32, target: IntOrString) -> ServicePort {
        ServicePort {
            name: Some(name.into()),
            port,
            protocol: Some("TCP".into()),
            target_port: Some(target),
            ..Default::default()
        }
    }

    pub(crate) fn pod(name: &str, ip: Option<&str>, ready: bool, container_port: i32) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                uid: Some(format!("uid-{name}")),
                labels: Some([("app".to_string(), "web".to_string())].into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: Some("n1".into()),
                containers: vec![Container {
                    name: "c".into(),
                    ports: Some(vec![ContainerPort {
                        name: Some("http".into()),
                        container_port,
                        protocol: Some("TCP".into()),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some("Running".into()),
                pod_ip: ip.map(str::to_string),
                pod_ips: ip.map(|ip| vec![PodIP { ip: ip.into() }]),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn named_target_ports_resolve_per_pod() {
        let svc = service(vec![
            port("web", 80, IntOrString::String("http".into())),
            port("other", 81, IntOrString::String("nope".into())),
        ]);
        let pods = [
            pod("a", Some("10.1.0.5"), true, 8080),
            pod("b", Some("10.1.0.6"), true, 9090),
        ];
        let addrs = pod_addresses(&svc, &pods, false);
        let ports: Vec<Vec<i32>> = addrs
            .iter()
            .map(|a| a.ports.iter().map(|p| p.port).collect())
            .collect();
        assert_eq!(ports, [vec![8080], vec![9090]]);
        // Different resolved ports: one subset each.
        let (subsets, truncated) = subsets(&svc, &addrs);
        assert_eq!(subsets.len(), 2);
        assert!(!truncated);
    }

    #[test]
    fn readiness_splits_addresses_and_pods_without_ip_or_finished_are_left_out() {
        let svc = service(vec![port("web", 80, IntOrString::Int(8080))]);
        let mut done = pod("done", Some("10.1.0.9"), false, 80);
        done.status.as_mut().unwrap().phase = Some("Succeeded".into());
        let pods = [
            pod("b", Some("10.1.0.6"), true, 80),
            pod("a", Some("10.1.0.5"), true, 80),
            pod("c", Some("10.1.0.7"), false, 80),
            pod("noip", None, true, 80),
            done,
        ];
        let (subsets, _) = subsets(&svc, &pod_addresses(&svc, &pods, false));
        assert_eq!(subsets.len(), 1);
        let ips = |v: &Option<Vec<EndpointAddress>>| -> Vec<String> {
            v.iter().flatten().map(|a| a.ip.clone()).collect()
        };
        assert_eq!(ips(&subsets[0].addresses), ["10.1.0.5", "10.1.0.6"]);
        assert_eq!(ips(&subsets[0].not_ready_addresses), ["10.1.0.7"]);
        assert_eq!(subsets[0].ports.as_ref().unwrap()[0].port, 8080);
        let r = subsets[0].addresses.as_ref().unwrap()[0]
            .target_ref
            .clone()
            .unwrap();
        assert_eq!(
            (r.kind.as_deref(), r.name.as_deref()),
            (Some("Pod"), Some("a"))
        );
    }

    #[test]
    fn publish_not_ready_and_terminating() {
        let mut svc = service(vec![port("web", 80, IntOrString::Int(80))]);
        let mut gone = pod("gone", Some("10.1.0.8"), true, 80);
        gone.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::now(),
            ));
        let pods = [pod("c", Some("10.1.0.7"), false, 80), gone];
        assert_eq!(pod_addresses(&svc, &pods, false).len(), 1);
        assert_eq!(pod_addresses(&svc, &pods, true).len(), 2);
        svc.spec.as_mut().unwrap().publish_not_ready_addresses = Some(true);
        let (subsets, _) = subsets(&svc, &pod_addresses(&svc, &pods, true));
        assert_eq!(subsets[0].addresses.as_ref().unwrap().len(), 2);
        assert!(subsets[0].not_ready_addresses.is_none());
    }

    #[test]
    fn over_capacity_keeps_ready_addresses() {
        let svc = service(vec![port("web", 80, IntOrString::Int(80))]);
        let pods: Vec<Pod> = (0..MAX_ADDRESSES + 5)
            .map(|i| {
                let ip = format!("10.1.{}.{}", i / 250, i % 250 + 1);
                pod(&format!("p{i}"), Some(&ip), i >= 10, 80)
            })
            .collect();
        let (subsets, truncated) = subsets(&svc, &pod_addresses(&svc, &pods, false));
        assert!(truncated);
        let ready = subsets[0].addresses.as_ref().unwrap().len();
        let not_ready = subsets[0].not_ready_addresses.as_ref().map_or(0, Vec::len);
        assert_eq!((ready, not_ready), (MAX_ADDRESSES - 5, 5));
    }

    #[test]
    fn headless_label_and_selectorless_services() {
        let mut svc = service(vec![]);
        svc.spec.as_mut().unwrap().cluster_ip = Some("None".into());
        assert_eq!(
            endpoints_labels(&svc).get(HEADLESS).map(String::as_str),
            Some("")
        );
        // Headless without ports still lists addresses.
        let (subsets, _) = subsets(
            &svc,
            &pod_addresses(&svc, &[pod("a", Some("10.1.0.5"), true, 80)], false),
        );
        assert_eq!(subsets.len(), 1);
        assert!(subsets[0].ports.is_none());
        svc.spec.as_mut().unwrap().selector = None;
        assert!(!has_selector(&svc));
    }
}
