"""The platform's own namespace and its record of what this stack deployed."""

from __future__ import annotations

import hashlib
import json

import pulumi
import pulumi_kubernetes as k8s

from mlplatform import __version__
from mlplatform.modules import placement
from mlplatform.modules.base import ModuleContext
from mlplatform.modules.contracts import CoreOutputs
from mlplatform.paths import REPO_ROOT


class Core(pulumi.ComponentResource):
    """Namespace `platform.namespace` plus the `mlplatform-info` ConfigMap that records the
    environment, the enabled modules and the digest of the version lock in force."""

    outputs: CoreOutputs

    def __init__(self, name: str, ctx: ModuleContext, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlplatform:core:Platform", name, None, opts)
        config = ctx.resolved.config
        profile = ctx.resolved.profile
        labels = ctx.labels
        if not placement.holds_platform():
            # A team stack: the platform stack holds both objects.
            self.outputs = CoreOutputs(namespace=pulumi.Output.from_input(config.platform.namespace), labels=labels)
            self.register_outputs({"namespace": self.outputs.namespace})
            return

        self.namespace = k8s.core.v1.Namespace(
            config.platform.namespace,
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=config.platform.namespace,
                labels={**labels, **profile.namespace_labels, "mlplatform.io/role": "system"},
            ),
            opts=ctx.child_opts(self),
        )
        lock_file = REPO_ROOT / config.versions.lock
        info = {
            "environment": config.environment,
            "cloudProvider": config.cloud.provider if config.cloud else "",
            "platformVersion": __version__,
            "lockDigest": "sha256:" + hashlib.sha256(lock_file.read_bytes()).hexdigest(),
            "modules": json.dumps(["core", *config.modules.enabled_names()]),
            "nodePools": json.dumps([pool.name for pool in config.cluster.node_pools]),
        }
        self.info = k8s.core.v1.ConfigMap(
            "mlplatform-info",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name="mlplatform-info",
                namespace=self.namespace.metadata.name,
                labels=labels,
            ),
            data=info,
            opts=ctx.child_opts(self),
        )
        self.outputs = CoreOutputs(namespace=self.namespace.metadata.name, labels=labels)
        self.register_outputs({"namespace": self.outputs.namespace})


class SharedNamespaces(pulumi.ComponentResource):
    """The owner of the namespaces several modules install into (Kubeflow's `kubeflow`):
    each is created by the first module that installs into it (ModuleContext.shared_namespace)
    but belongs here, so its URN does not depend on which modules are on. The program
    registers the outputs once every module is built."""

    def __init__(self, name: str, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlplatform:core:SharedNamespaces", name, None, opts)
