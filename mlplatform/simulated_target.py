"""What `pulumi up` adapts when it targets the local simulated plane, and nowhere else.

No container runs on that plane: kwok marks pods Running, but no webhook server ever answers.
So, on that plane only, admission webhooks are registered with failurePolicy Ignore (a request
they cannot reach is admitted, instead of refused) and CRD conversion webhooks are replaced by
no conversion (the apiserver would otherwise call them to serve or clean up old versions). On a
real cluster the servers' Deployments come up and these objects are applied as upstream wrote
them. `mlplatform cluster up` marks its plane; the program reads that mark beside the plane's
kubeconfig, so a stack that names its own kubeconfig never gets these changes.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pulumi

MARKER_NAME = "simulated-plane"

_WEBHOOK_CONFIGURATIONS = (
    "kubernetes:admissionregistration.k8s.io/v1:ValidatingWebhookConfiguration",
    "kubernetes:admissionregistration.k8s.io/v1:MutatingWebhookConfiguration",
)
_CRD = "kubernetes:apiextensions.k8s.io/v1:CustomResourceDefinition"


def mark(cluster_dir: Path) -> None:
    (cluster_dir / MARKER_NAME).write_text("webhook servers: none\n")


def targets_simulated_plane(kubeconfig: str | None) -> bool:
    return bool(kubeconfig) and (Path(kubeconfig).parent / MARKER_NAME).is_file()


def _webhooks_ignored(webhooks):
    if isinstance(webhooks, pulumi.Output):
        return webhooks.apply(_webhooks_ignored)
    changed = copy.deepcopy(list(webhooks or []))
    for webhook in changed:
        webhook["failurePolicy"] = "Ignore"
    return changed


def _without_conversion_webhook(spec):
    if isinstance(spec, pulumi.Output):
        return spec.apply(_without_conversion_webhook)
    if not isinstance(spec, dict) or (spec.get("conversion") or {}).get("strategy") != "Webhook":
        return spec
    changed = dict(spec)
    changed["conversion"] = {"strategy": "None"}
    return changed


def without_webhook_servers(args: pulumi.ResourceTransformationArgs) -> pulumi.ResourceTransformationResult | None:
    """Stack transformation: the two adaptations above, for the resources they concern."""
    if args.type_ in _WEBHOOK_CONFIGURATIONS and args.props.get("webhooks") is not None:
        props = {**args.props, "webhooks": _webhooks_ignored(args.props["webhooks"])}
        return pulumi.ResourceTransformationResult(props, args.opts)
    if args.type_ == _CRD and args.props.get("spec") is not None:
        props = {**args.props, "spec": _without_conversion_webhook(args.props["spec"])}
        return pulumi.ResourceTransformationResult(props, args.opts)
    return None
