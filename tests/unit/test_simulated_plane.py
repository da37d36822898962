"""The adaptations `pulumi up` makes on the local simulated plane, and only there."""

from __future__ import annotations

import pulumi

from mlplatform.simulated_target import mark, targets_simulated_plane, without_webhook_servers


def _args(type_: str, props: dict) -> pulumi.ResourceTransformationArgs:
    return pulumi.ResourceTransformationArgs(None, type_, "x", props, pulumi.ResourceOptions())


def test_only_a_kubeconfig_beside_the_planes_mark_targets_it(tmp_path):
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("{}")
    assert not targets_simulated_plane(str(kubeconfig))
    mark(tmp_path)
    assert targets_simulated_plane(str(kubeconfig))
    assert not targets_simulated_plane(None)


def test_webhooks_fail_open_and_the_manifest_is_left_alone():
    webhooks = [{"name": "a.example.com", "failurePolicy": "Fail"}, {"name": "b.example.com"}]
    result = without_webhook_servers(
        _args("kubernetes:admissionregistration.k8s.io/v1:ValidatingWebhookConfiguration", {"webhooks": webhooks})
    )
    assert [w["failurePolicy"] for w in result.props["webhooks"]] == ["Ignore", "Ignore"]
    assert webhooks[0]["failurePolicy"] == "Fail"


def test_crd_conversion_webhooks_become_no_conversion():
    spec = {"group": "example.com", "conversion": {"strategy": "Webhook", "webhook": {"clientConfig": {}}}}
    result = without_webhook_servers(
        _args("kubernetes:apiextensions.k8s.io/v1:CustomResourceDefinition", {"spec": spec})
    )
    assert result.props["spec"]["conversion"] == {"strategy": "None"}
    assert result.props["spec"]["group"] == "example.com"
    plain = {"group": "example.com", "conversion": {"strategy": "None"}}
    unchanged = without_webhook_servers(
        _args("kubernetes:apiextensions.k8s.io/v1:CustomResourceDefinition", {"spec": plain})
    )
    assert unchanged.props["spec"] is plain


def test_other_resources_pass_through():
    assert without_webhook_servers(_args("kubernetes:core/v1:ConfigMap", {"data": {"a": "b"}})) is None
