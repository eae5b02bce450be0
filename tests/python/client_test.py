"""The Python `kubernetes` client against a running mk8s API server: list, create, patch and
watch ConfigMaps and Deployments, with the client's strict model deserialisation.

Usage: client_test.py KUBECONFIG SERVER
Prints `ok` and exits 0 when every step worked; any exception fails the run.
"""
import sys

from kubernetes import client, config, watch


def main():
    kubeconfig, server = sys.argv[1], sys.argv[2]
    cfg = client.Configuration()
    config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
    cfg.host = server
    api = client.ApiClient(cfg)
    core = client.CoreV1Api(api)
    apps = client.AppsV1Api(api)

    v = client.VersionApi(api).get_code()
    assert v.minor == "32", v

    ns = "pyclient"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    names = [n.metadata.name for n in core.list_namespace().items]
    assert ns in names and "kube-system" in names, names

    # An empty list must be `items: []`, which the models require.
    assert core.list_namespaced_config_map(ns).items == []

    cm = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="py", labels={"app": "py"}),
                            data={"a": "1"})
    created = core.create_namespaced_config_map(ns, cm)
    assert created.metadata.uid and created.metadata.resource_version
    patched = core.patch_namespaced_config_map("py", ns, {"data": {"b": "2"}})
    assert patched.data == {"a": "1", "b": "2"}, patched.data
    listed = core.list_namespaced_config_map(ns, label_selector="app=py")
    assert [c.metadata.name for c in listed.items] == ["py"]

    dep = client.V1Deployment(
        metadata=client.V1ObjectMeta(name="web"),
        spec=client.V1DeploymentSpec(
            replicas=2,
            selector=client.V1LabelSelector(match_labels={"app": "web"}),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels={"app": "web"}),
                spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="busybox:1.36")]))))
    apps.create_namespaced_deployment(ns, dep)
    d = apps.patch_namespaced_deployment("web", ns, {"spec": {"replicas": 3}})
    assert d.spec.replicas == 3
    assert d.spec.strategy.type == "RollingUpdate"
    assert [x.metadata.name for x in apps.list_namespaced_deployment(ns).items] == ["web"]
    apps.list_deployment_for_all_namespaces()
    core.list_pod_for_all_namespaces()
    core.list_service_for_all_namespaces()

    # Watch: initial ADDED events, then a change made after the watch began.
    rv = core.list_namespaced_config_map(ns).metadata.resource_version
    core.create_namespaced_config_map(
        ns, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="late"), data={"x": "y"}))
    seen = []
    w = watch.Watch()
    for ev in w.stream(core.list_namespaced_config_map, ns, resource_version=rv, timeout_seconds=2):
        seen.append((ev["type"], ev["object"].metadata.name))
        if ev["object"].metadata.name == "late":
            w.stop()
    assert ("ADDED", "late") in seen, seen

    core.delete_namespaced_config_map("py", ns)
    assert [c.metadata.name for c in core.list_namespaced_config_map(ns).items] == ["late"]
    print("ok")


if __name__ == "__main__":
    main()
