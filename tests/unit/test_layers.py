"""The package's layers point one way: config parses and types; the rules (mlplatform.validation
and each capability's validation.py) judge what it typed; modules build; the program composes.
The local plane, the toolchain and the CLI are tools around the program, never inside it.

Imports are read from the source (every `import`, at module level or inside a function: a
function-level import is an arrow too)."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO_ROOT

PACKAGE = REPO_ROOT / "mlplatform"


def _module_name(path: Path) -> str:
    name = ".".join(path.relative_to(REPO_ROOT).with_suffix("").parts)
    return name.removesuffix(".__init__")


def import_graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                for alias in node.names:
                    # `from pkg import submodule` is an arrow to the submodule.
                    targets.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        for target in graph[todo.pop()]:
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def test_there_is_no_import_cycle():
    assert cycles(import_graph()) == []


def test_the_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [["a", "b", "c"]]


def test_config_only_parses_and_types():
    graph = import_graph()
    # Profiles fill defaults; paths and the upstream lookup of a resolved stack's pins.
    allowed = {"mlplatform.environments", "mlplatform.paths", "mlplatform.upstream"}
    outside = {
        (name, target)
        for name, targets in graph.items()
        if name.startswith("mlplatform.config")
        for target in targets
        if not target.startswith("mlplatform.config") and target not in allowed
    }
    assert outside == set()


def test_capability_rules_do_not_reach_into_the_modules():
    graph = import_graph()
    rules = [name for name in graph if name.endswith(".validation") and name != "mlplatform.validation"]
    assert {"mlplatform.gpu.validation", "mlplatform.mlflow.validation", "mlplatform.tenancy.validation"} <= set(rules)
    into_modules = {(name, t) for name in rules for t in reachable(graph, name) if t.startswith("mlplatform.modules")}
    assert into_modules == set()


def test_the_deployed_program_imports_no_dev_tool():
    graph = import_graph()
    tools = ("mlplatform.cluster", "mlplatform.toolchain", "mlplatform.engine", "mlplatform.cli")
    assert {m for m in reachable(graph, "mlplatform.program") if m.startswith(tools)} == set()
    # The walk does find the program's own parts.
    assert {"mlplatform.validation", "mlplatform.modules.registry"} <= reachable(graph, "mlplatform.program")


def test_modules_meet_through_contracts_only():
    """A module knows another only by its typed outputs (modules/contracts.py): no module file
    imports another module's file. base, contracts, services, crd_bundle and placement are shared
    helpers; the registry and the program compose."""
    graph = import_graph()
    shared = {
        "mlplatform.modules.base",
        "mlplatform.modules.contracts",
        "mlplatform.modules.services",
        "mlplatform.modules.crd_bundle",
        "mlplatform.modules.placement",
    }
    composers = {"mlplatform.modules.registry", "mlplatform.modules"}
    modules = {name for name in graph if name.startswith("mlplatform.modules.")} - shared - composers
    assert {"mlplatform.modules.gpu", "mlplatform.modules.tenancy", "mlplatform.modules.ml_services"} <= modules
    crossing = {(name, target) for name in modules for target in graph[name] if target in modules}
    assert crossing == set()
