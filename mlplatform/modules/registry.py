"""Which modules exist and the order they are composed in.

Every module class declares its contract (modules/contracts.py): the outputs it provides,
those it needs and those it uses. The order follows from those declarations alone: a module
comes after every enabled module whose outputs it needs or uses. Where two modules do not
depend on each other, the order below decides, so a composition is the same on every run.
Enabling a module whose needs are off is a config error (mlplatform.validation).
"""

from __future__ import annotations

from typing import Any

from mlplatform.config import ResolvedConfig
from mlplatform.modules.base import Module
from mlplatform.modules.contracts import ScrapeTarget
from mlplatform.modules.gpu import GpuLayer
from mlplatform.modules.identity import Identity
from mlplatform.modules.mesh import Mesh
from mlplatform.modules.ml_services import Katib, Kserve, Notebooks, Pipelines, Training
from mlplatform.modules.mlflow import Mlflow
from mlplatform.modules.monitoring import Monitoring
from mlplatform.modules.tenancy import Tenancy
from mlplatform.modules.workspaces import Workspaces

# Built modules by the name the stack config enables them with.
MODULES: dict[str, type[Module]] = {
    "monitoring": Monitoring,
    "gpu": GpuLayer,
    "tenancy": Tenancy,
    "mesh": Mesh,
    "identity": Identity,
    "mlflow": Mlflow,
    "notebooks": Notebooks,
    "pipelines": Pipelines,
    "katib": Katib,
    "training": Training,
    "kserve": Kserve,
    "workspaces": Workspaces,
}


def available_modules() -> set[str]:
    return set(MODULES)


def provider_of(contract: type, modules: dict[str, type[Module]] = MODULES) -> str:
    """The module whose outputs are of type `contract` (exactly one provides each type)."""
    found = [name for name, module in modules.items() if module.provides is contract]
    if len(found) != 1:
        raise ValueError(f"{contract.__name__} is provided by {found or 'no module'}")
    return found[0]


def _edges(name: str, modules: dict[str, type[Module]], contracts: tuple[type, ...]) -> tuple[str, ...]:
    return tuple(provider_of(contract, modules) for contract in contracts)


def module_needs(modules: dict[str, type[Module]] = MODULES) -> dict[str, tuple[str, ...]]:
    """Module -> the modules it cannot be built without (config must enable them too)."""
    return {name: _edges(name, modules, module.needs) for name, module in modules.items()}


def module_inputs(modules: dict[str, type[Module]] = MODULES) -> dict[str, tuple[str, ...]]:
    """Module -> every module whose outputs it reads (needs and uses)."""
    return {name: _edges(name, modules, (*module.needs, *module.uses)) for name, module in modules.items()}


def composition_order(enabled: list[str], modules: dict[str, type[Module]] = MODULES) -> list[str]:
    """Enabled modules, each after the enabled modules it reads from."""
    inputs = module_inputs(modules)
    ordered: list[str] = []
    visiting: set[str] = set()

    def visit(name: str) -> None:
        if name in ordered:
            return
        if name in visiting:
            raise ValueError(f"module dependency cycle through {name!r}")
        visiting.add(name)
        for dependency in inputs[name]:
            if dependency in enabled:
                visit(dependency)
        visiting.discard(name)
        ordered.append(name)

    for name in sorted(enabled, key=list(modules).index):
        visit(name)
    return ordered


def declared_inputs(name: str) -> frozenset[type]:
    module = MODULES[name]
    return frozenset((*module.needs, *module.uses))


def scrape_targets(resolved: ResolvedConfig) -> list[ScrapeTarget]:
    """The monitors every enabled module declares for its services."""
    return [
        target
        for name in composition_order(resolved.config.modules.enabled_names())
        for target in MODULES[name].scrape_targets(resolved)
    ]


def required_secrets(resolved: ResolvedConfig) -> list[tuple[str, str]]:
    """(secret, what needs it) for every Secret value the stack's enabled services are given:
    the engine refuses to start until each is set, whatever the backend (in-cluster databases
    and stores get these credentials too, never upstream's defaults)."""
    needed: list[tuple[str, Any]] = []
    for name in composition_order(resolved.config.modules.enabled_names()):
        needed += MODULES[name].required_secrets(resolved)
    return needed
