"""Under the engine every Kubernetes object of ours is applied with force, so that a field
changed out of band is planned back instead of stopping `preview` with a field conflict."""

from __future__ import annotations

import pulumi
import pulumi_kubernetes as k8s

from mlplatform.modules.base import FORCE_ANNOTATION, create_object, declared_state_wins


def _args(type_: str, props: dict) -> pulumi.ResourceTransformationArgs:
    return pulumi.ResourceTransformationArgs(None, type_, "x", props, pulumi.ResourceOptions())


def test_a_manifest_gains_the_force_annotation_and_keeps_its_own():
    metadata = {"name": "team-a", "annotations": {"owner": "ml"}}
    result = declared_state_wins(_args("kubernetes:core/v1:Namespace", {"metadata": metadata}))
    assert result.props["metadata"] == {"name": "team-a", "annotations": {"owner": "ml", FORCE_ANNOTATION: "true"}}
    assert metadata == {"name": "team-a", "annotations": {"owner": "ml"}}


def test_typed_metadata_is_copied_not_changed():
    metadata = k8s.meta.v1.ObjectMetaArgs(name="mlplatform-info", labels={"a": "b"})
    result = declared_state_wins(_args("kubernetes:core/v1:ConfigMap", {"metadata": metadata, "data": {}}))
    assert result.props["metadata"].annotations == {FORCE_ANNOTATION: "true"}
    assert result.props["metadata"].labels == {"a": "b"}
    assert metadata.annotations is None


def test_custom_resources_are_forced_too():
    result = declared_state_wins(_args("kubernetes:kueue.x-k8s.io/v1beta1:ClusterQueue", {"metadata": {"name": "q"}}))
    assert result.props["metadata"]["annotations"] == {FORCE_ANNOTATION: "true"}


@pulumi.runtime.test
def test_metadata_known_later_is_forced_when_it_resolves():
    result = declared_state_wins(
        _args("kubernetes:core/v1:ConfigMap", {"metadata": pulumi.Output.from_input({"name": "later"})})
    )
    return result.props["metadata"].apply(
        lambda metadata: _assert_equal(metadata, {"name": "later", "annotations": {FORCE_ANNOTATION: "true"}})
    )


def _assert_equal(actual, expected):
    assert actual == expected


def test_patches_of_objects_that_are_not_ours_are_left_to_decide():
    metadata = {"name": "cluster-monitoring-config", "namespace": "openshift-monitoring"}
    assert declared_state_wins(_args("kubernetes:core/v1:ConfigMapPatch", {"metadata": metadata})) is None


def test_what_is_not_a_kubernetes_object_passes_through():
    assert declared_state_wins(_args("mlplatform:core:Platform", {"metadata": {"name": "x"}})) is None
    assert declared_state_wins(_args("pulumi:providers:kubernetes", {"kubeconfig": "k"})) is None
    assert declared_state_wins(_args("kubernetes:helm.sh/v3:Release", {"chart": "gpu-operator"})) is None


class _NoCluster(pulumi.runtime.Mocks):
    def new_resource(self, args):
        return args.name + "-id", args.inputs

    def call(self, args):
        return {}


def test_a_priority_class_value_is_replaced_not_updated():
    """The apiserver refuses to change `value` in place; the provider does not know it."""
    pulumi.runtime.set_mocks(_NoCluster(), preview=False)
    seen = {}

    def capture(args):
        seen[args.name] = args.opts
        return None

    manifest = {
        "apiVersion": "scheduling.k8s.io/v1",
        "kind": "PriorityClass",
        "metadata": {"name": "mlplatform-batch"},
        "value": 1000,
    }
    create_object(manifest, pulumi.ResourceOptions(transformations=[capture]))
    config_map = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "n"}}
    create_object(config_map, pulumi.ResourceOptions(transformations=[capture]))
    assert seen["mlplatform-batch"].replace_on_changes == ["value", "preemptionPolicy"]
    assert seen["mlplatform-batch"].delete_before_replace is True
    assert not seen["n/c"].replace_on_changes and not seen["n/c"].delete_before_replace


def test_cluster_ip_services_are_not_awaited_and_others_are():
    from mlplatform.modules.base import SKIP_AWAIT_ANNOTATION, cluster_services_not_awaited

    metadata = {"name": "katib-ui", "namespace": "kubeflow", "annotations": {"owner": "ml"}}
    for spec in ({"ports": [{"port": 80}]}, {"type": "ClusterIP", "clusterIP": "None"}):
        result = cluster_services_not_awaited(_args("kubernetes:core/v1:Service", {"metadata": metadata, "spec": spec}))
        assert result.props["metadata"]["annotations"] == {"owner": "ml", SKIP_AWAIT_ANNOTATION: "true"}
    assert metadata["annotations"] == {"owner": "ml"}
    # A load balancer's address is awaited (and published); other kinds are not Services.
    for service_type in ("LoadBalancer", "NodePort", "ExternalName"):
        spec = {"type": service_type}
        assert (
            cluster_services_not_awaited(_args("kubernetes:core/v1:Service", {"metadata": metadata, "spec": spec}))
            is None
        )
    assert (
        cluster_services_not_awaited(_args("kubernetes:apps/v1:Deployment", {"metadata": metadata, "spec": {}})) is None
    )


def test_the_engine_registers_the_service_await_transformation_and_renders_do_not(run_stack):
    """Under mocks (a render) no Service carries the annotation: it is the engine's alone."""
    from mlplatform.modules.base import SKIP_AWAIT_ANNOTATION

    mocks, _ = run_stack("lab")
    services = [r for r in mocks.resources if r.typ == "kubernetes:core/v1:Service"]
    assert services
    assert not [
        r.name for r in services if SKIP_AWAIT_ANNOTATION in ((r.inputs.get("metadata") or {}).get("annotations") or {})
    ]
