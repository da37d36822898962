"""Module contracts: each module declares the outputs it provides, needs and uses; the registry
orders by those declarations; a module cannot read what it did not declare; objects shared by
several modules have one owner, so switching a module on or off never moves another's URN."""

from __future__ import annotations

import json
import random

import pulumi
import pytest

from mlplatform.modules import contracts
from mlplatform.modules.base import ModuleContext, UndeclaredInput
from mlplatform.modules.registry import MODULES, composition_order, module_inputs, module_needs, provider_of
from mlplatform.render import RecordingMocks, StackMonitor, use_mocks
from tests.conftest import REPO_ROOT, UPSTREAM_MIRROR, pulumi_config_of


def test_every_module_provides_its_own_type_and_every_input_has_a_provider():
    provided = [module.provides for module in MODULES.values()]
    assert len(set(provided)) == len(provided)
    for name, module in MODULES.items():
        assert isinstance(module.provides, type) and module.provides.__module__ == contracts.__name__, name
        for contract in (*module.needs, *module.uses):
            assert provider_of(contract) != name


def test_the_order_follows_the_declarations_whatever_order_the_registry_lists():
    inputs = module_inputs()
    names = list(MODULES)
    shuffles = [names, names[::-1]] + [random.Random(seed).sample(names, len(names)) for seed in range(20)]
    for listed in shuffles:
        modules = {name: MODULES[name] for name in listed}
        for enabled in (names, names[1::2], names[::2]):
            order = composition_order(list(enabled), modules)
            assert sorted(order) == sorted(enabled)
            for position, name in enumerate(order):
                for dependency in inputs[name]:
                    if dependency in enabled:
                        assert order.index(dependency) < position, (listed, name, dependency)


def test_declared_reads_give_the_order_its_known_constraints():
    inputs = module_inputs()
    # Monitors need monitoring's CRDs; quotas need the GPU layer's resource names; services
    # take MLflow's tracking URI; notebooks cannot run without team namespaces.
    assert "monitoring" in inputs["gpu"] and "gpu" in inputs["tenancy"]
    assert "mlflow" in inputs["pipelines"] and "mlflow" in inputs["notebooks"]
    assert module_needs()["notebooks"] == ("tenancy",)


def test_a_cycle_in_the_declarations_is_refused():
    class A(contracts.ServiceOutputs):
        pass

    class B(contracts.ServiceOutputs):
        pass

    first = type("First", (), {"provides": A, "needs": (B,), "uses": ()})
    second = type("Second", (), {"provides": B, "needs": (), "uses": (A,)})
    with pytest.raises(ValueError, match="cycle"):
        composition_order(["first", "second"], {"first": first, "second": second})


def test_a_module_cannot_read_outputs_it_did_not_declare():
    tenancy = contracts.TenancyOutputs(namespaces={"a": "team-a"}, priority_classes=())
    ctx = ModuleContext(resolved=None, provider=None, outputs={contracts.TenancyOutputs: tenancy})  # type: ignore[arg-type]
    katib = ctx.for_module("katib", frozenset(MODULES["katib"].needs + MODULES["katib"].uses))
    assert katib.input(contracts.TenancyOutputs) is tenancy
    with pytest.raises(UndeclaredInput, match="GpuOutputs"):
        katib.input(contracts.GpuOutputs)
    notebooks = ctx.for_module("notebooks", frozenset(MODULES["notebooks"].needs))
    with pytest.raises(UndeclaredInput, match="needs TenancyOutputs"):
        ModuleContext(resolved=None, provider=None).for_module(
            "notebooks", frozenset(MODULES["notebooks"].needs)
        ).require(  # type: ignore[arg-type]
            contracts.TenancyOutputs
        )
    assert notebooks.require(contracts.TenancyOutputs) is tenancy


class RecordingMonitor(StackMonitor):
    """The mock monitor, also keeping each registration's aliases (it ignores them itself)."""

    def __init__(self, mocks: pulumi.runtime.Mocks, stack: str) -> None:
        super().__init__(mocks, stack)
        self.aliases: dict[str, list[str]] = {}

    def RegisterResource(self, request):
        response = super().RegisterResource(request)
        self.aliases[response.urn] = [alias.urn for alias in request.aliases if alias.urn] + list(request.aliasURNs)
        return response


def _urns(stack: str, config: dict[str, str]) -> RecordingMonitor:
    from mlplatform.program import main

    mocks = RecordingMocks()
    monitor = RecordingMonitor(mocks, stack)
    use_mocks(mocks, stack, monitor=monitor)
    pulumi.runtime.set_all_config(dict(config))

    @pulumi.runtime.test
    def program() -> None:
        main()

    program()
    return monitor


def _without(config: dict[str, str], module: str) -> dict[str, str]:
    modules = json.loads(config["mlplatform:modules"])
    modules[module] = {**modules[module], "enabled": False}
    return {**config, "mlplatform:modules": json.dumps(modules)}


@pytest.fixture(scope="module")
def lab_runs():
    """The lab stack, and the lab stack without each module a toggle matters most for: the
    former first owner of `kubeflow` (pipelines), the one whose CRDs others wait on
    (monitoring) and the one whose outputs services read (mlflow)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLPLATFORM_MIRROR", str(UPSTREAM_MIRROR))
        config = pulumi_config_of(REPO_ROOT / "stacks" / "Pulumi.lab.yaml")
        modules = json.loads(config["mlplatform:modules"])
        toggled = [m for m in ("pipelines", "monitoring", "mlflow") if modules.get(m, {}).get("enabled")]
        assert toggled, "the lab stack enables none of the modules this test switches off"
        full = _urns("lab", config)
        return full, {module: _urns("lab", _without(config, module)) for module in toggled}


def test_switching_a_module_off_moves_no_other_urn(lab_runs):
    full, without = lab_runs
    for module, run in without.items():
        moved = set(run.resources) - set(full.resources)
        assert moved == set(), f"with {module} off these URNs are new: {sorted(moved)[:5]}"
        assert len(run.resources) < len(full.resources)


def test_shared_namespaces_have_one_owner_and_keep_their_former_urns(lab_runs):
    full, without = lab_runs
    owner = "mlplatform:core:SharedNamespaces$kubernetes:core/v1:Namespace::kubeflow"
    for run in (full, *without.values()):
        kubeflow = [urn for urn in run.resources if urn.endswith("$kubernetes:core/v1:Namespace::kubeflow")]
        assert len(kubeflow) == 1 and kubeflow[0].endswith(owner), kubeflow
    # A stack that already holds the namespace under the module that first created it keeps it.
    urn = next(u for u in full.resources if u.endswith(owner))
    former = set(full.aliases[urn])
    for module_type in ("mlplatform:pipelines:Pipelines", "mlplatform:katib:Katib", "mlplatform:training:Training"):
        assert f"urn:pulumi:lab::mlplatform::{module_type}$kubernetes:core/v1:Namespace::kubeflow" in former


def test_readme_draws_the_declared_reads():
    """README's module map is the registry's declarations: an arrow for every module another
    reads, a thick one for every need, and every module drawn."""
    import re

    readme = (REPO_ROOT / "README.md").read_text()
    section = readme[readme.index("## How it fits together") :]
    chart = section[section.index("```mermaid") : section.index("```", section.index("```mermaid") + 3)]
    reads = {(a, b) for a, b in re.findall(r"^\s*(\w+) --> (\w+)$", chart, re.M)}
    needs = {(a, b) for a, b in re.findall(r"^\s*(\w+) ==> (\w+)$", chart, re.M)}
    declared_needs = {(dep, name) for name, deps in module_needs().items() for dep in deps}
    declared_uses = {(dep, name) for name, deps in module_inputs().items() for dep in deps} - declared_needs
    assert needs == declared_needs
    assert reads == declared_uses
    drawn = set(re.findall(r"\b(\w+)\b", chart)) & set(MODULES)
    assert drawn == set(MODULES)
