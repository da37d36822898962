"""What every module receives: the validated config, its profile, the provider, and
the typed outputs of the modules it depends on."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from mlplatform.config import ResolvedConfig

MANAGED_BY = "mlplatform"


@dataclass(frozen=True)
class ModuleContext:
    resolved: ResolvedConfig
    provider: k8s.Provider
    # Typed outputs of the modules already built, by module name.
    outputs: dict[str, Any] = field(default_factory=dict)

    @property
    def labels(self) -> dict[str, str]:
        """Labels on every object we create: they make the cluster inventory of a stack queryable."""
        return {
            "app.kubernetes.io/managed-by": MANAGED_BY,
            "app.kubernetes.io/part-of": "mlplatform",
            "mlplatform.io/stack": self.resolved.stack,
            **self.resolved.config.platform.labels,
        }

    def child_opts(self, parent: pulumi.Resource, **kwargs: Any) -> pulumi.ResourceOptions:
        return pulumi.ResourceOptions(parent=parent, provider=self.provider, **kwargs)
