"""Which modules exist, what each needs, and the order they are composed in.

MODULE_DEPENDENCIES names every capability of the distribution so config can refer to
them; MODULES holds only those built in this release. Enabling one that is not built is a
config error, never a silent no-op.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pulumi

from mlplatform.modules.base import ModuleContext
from mlplatform.modules.gpu import GpuLayer
from mlplatform.modules.ml_services import Katib, Kserve, Notebooks, Pipelines, Training
from mlplatform.modules.mlflow import Mlflow
from mlplatform.modules.monitoring import Monitoring
from mlplatform.modules.tenancy import Tenancy

# capability -> capabilities it needs enabled too
MODULE_DEPENDENCIES: dict[str, tuple[str, ...]] = {
    # Monitoring first: its CRDs must be served before any module's monitors.
    "monitoring": (),
    "gpu": (),
    "tenancy": (),
    # MLflow before the services whose pods get its tracking URI.
    "mlflow": (),
    "notebooks": ("tenancy",),
    "pipelines": (),
    "katib": (),
    "training": (),
    "kserve": (),
}

# Built modules: name -> factory(name, ctx, opts) returning a ComponentResource with `.outputs`.
ModuleFactory = Callable[[str, ModuleContext, pulumi.ResourceOptions], Any]
MODULES: dict[str, ModuleFactory] = {
    "monitoring": Monitoring,
    "gpu": GpuLayer,
    "tenancy": Tenancy,
    "mlflow": Mlflow,
    "notebooks": Notebooks,
    "pipelines": Pipelines,
    "katib": Katib,
    "kserve": Kserve,
    "training": Training,
}


def available_modules() -> set[str]:
    return set(MODULES)


def composition_order(enabled: list[str]) -> list[str]:
    """Enabled modules, each after the modules it depends on (stable for equal standing)."""
    ordered: list[str] = []
    visiting: set[str] = set()

    def visit(name: str) -> None:
        if name in ordered:
            return
        if name in visiting:
            raise ValueError(f"module dependency cycle through {name!r}")
        visiting.add(name)
        for dependency in MODULE_DEPENDENCIES.get(name, ()):
            if dependency in enabled:
                visit(dependency)
        visiting.discard(name)
        ordered.append(name)

    for name in sorted(enabled, key=list(MODULE_DEPENDENCIES).index):
        visit(name)
    return ordered
