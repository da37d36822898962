"""Team stacks: a platform stack's teams split over stacks of their own.

The objects are judged against the render of the unsplit stack: the platform stack and its team
stacks together hold exactly its objects, each once, and a team's objects are the same in a
team stack as in the platform."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlplatform.config import ConfigError
from mlplatform.modules.placement import Placement
from mlplatform.render import manifests_of, run_program, stack_config_strings
from mlplatform.validation import load_stack
from tests.conftest import REPO_ROOT, render_shared

STACK_LABEL = "mlplatform.io/stack"


def lab_split(
    folder: Path, own: int = 1, team_stack: str = "lab-teams-a", document: dict | None = None
) -> tuple[Path, Path, list[dict]]:
    """The shipped lab stack (or `document`, a stack file) with all but its first `own` teams
    moved to one team stack."""
    document = copy.deepcopy(document or yaml.safe_load((REPO_ROOT / "stacks" / "Pulumi.lab.yaml").read_text()))
    tenancy = document["config"]["mlplatform:modules"]["tenancy"]
    teams = tenancy["teams"]
    tenancy["teams"] = teams[:own]
    tenancy["teamStacks"] = [team_stack]
    platform = folder / "Pulumi.lab.yaml"
    platform.write_text(yaml.safe_dump(document))
    moved = teams[own:]
    team_file = folder / f"Pulumi.{team_stack}.yaml"
    write_team_stack(team_file, "lab", moved)
    return platform, team_file, moved


def write_team_stack(path: Path, platform: str, teams: list[dict], **extra: Any) -> None:
    config = {"mlplatform:platformStack": platform, "mlplatform:teams": teams, **extra}
    path.write_text(yaml.safe_dump({"config": config}))


def problems_of(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as raised:
        load_stack(str(path))
    return [str(problem) for problem in raised.value.problems]


# -- config ----------------------------------------------------------------------------------


def test_both_sides_resolve_one_config_and_know_where_each_team_lives(tmp_path):
    platform_file, team_file, moved = lab_split(tmp_path)
    platform = load_stack(str(platform_file))
    team = load_stack(str(team_file))
    unsplit = load_stack("lab")
    assert platform.config == team.config
    # Every team of the unsplit stack, in its order: the platform's own first.
    assert [t.name for t in platform.config.modules.tenancy.teams] == [
        t.name for t in unsplit.config.modules.tenancy.teams
    ]
    assert platform.team_stacks == team.team_stacks == {t["name"]: "lab-teams-a" for t in moved}
    assert (platform.stack, platform.platform_stack) == ("lab", "lab")
    assert (team.stack, team.platform_stack) == ("lab-teams-a", "lab")


def test_a_team_stack_holds_nothing_but_its_teams(tmp_path):
    _, team_file, moved = lab_split(tmp_path)
    write_team_stack(team_file, "lab", moved, **{"mlplatform:environment": "cloud"})
    (problem,) = problems_of(team_file)
    assert problem.startswith(f"{team_file}: mlplatform:environment: a team stack holds only its teams")


def test_a_problem_in_a_team_stacks_team_names_its_file_and_key(tmp_path):
    platform_file, team_file, moved = lab_split(tmp_path)
    broken = copy.deepcopy(moved)
    broken[1]["quota"]["cpu"] = "lots"
    write_team_stack(team_file, "lab", broken)
    for path in (platform_file, team_file):
        (problem,) = problems_of(path)
        assert problem.startswith(f"{team_file}: mlplatform:teams[1].quota.cpu: 'lots' breaks kubernetes-quantity")


def test_rules_across_teams_hold_across_stacks(tmp_path):
    platform_file, team_file, moved = lab_split(tmp_path)
    first = yaml.safe_load(platform_file.read_text())["config"]["mlplatform:modules"]["tenancy"]["teams"][0]
    write_team_stack(team_file, "lab", [*moved, first])
    problems = problems_of(team_file)
    assert any(
        p.startswith(f"{team_file}: mlplatform:teams[{len(moved)}].name:") and "duplicate team" in p for p in problems
    ), problems


def test_a_team_stack_must_be_listed_by_the_platform_it_names(tmp_path):
    platform_file, _, _ = lab_split(tmp_path)
    stray = tmp_path / "Pulumi.lab-teams-b.yaml"
    write_team_stack(stray, "lab", [])
    (problem,) = problems_of(stray)
    assert problem == (
        f"{platform_file}: mlplatform:modules.tenancy.teamStacks: does not list team stack 'lab-teams-b' "
        "(allowed: add 'lab-teams-b' there; it lists lab-teams-a)"
    )


def test_a_listed_team_stack_must_name_the_platform(tmp_path):
    platform_file, team_file, moved = lab_split(tmp_path)
    write_team_stack(team_file, "cloud", moved)
    (problem,) = problems_of(platform_file)
    assert problem.startswith(f"{team_file}: mlplatform:platformStack: 'cloud', but 'lab' lists this stack")
    team_file.unlink()
    (problem,) = problems_of(platform_file)
    assert problem == f"{team_file}: <file>: no such stack file"


def test_team_stack_names_follow_the_stack_name_rule(tmp_path):
    platform_file, _, _ = lab_split(tmp_path, team_stack="lab-teams-a")
    document = yaml.safe_load(platform_file.read_text())
    document["config"]["mlplatform:modules"]["tenancy"]["teamStacks"] = ["teams a"]
    platform_file.write_text(yaml.safe_dump(document))
    (problem,) = problems_of(platform_file)
    assert problem.startswith(f"{platform_file}: mlplatform:modules.tenancy.teamStacks[0]: 'teams a' breaks stack-name")


# -- placement -------------------------------------------------------------------------------


def test_placement_gives_a_team_its_namespace_its_namespace_objects_and_its_labelled_objects():
    placement = Placement(
        stack="lab-teams-a",
        platform_stack="lab",
        team_stack={"nlp": "lab-teams-a"},
        namespace_stack={"team-nlp": "lab-teams-a"},
    )

    def manifest(kind: str, name: str, namespace: str | None = None, **labels: str) -> dict[str, Any]:
        metadata: dict[str, Any] = {"name": name, "labels": labels}
        if namespace:
            metadata["namespace"] = namespace
        return {"apiVersion": "v1" if kind == "Namespace" else "x/v1", "kind": kind, "metadata": metadata}

    assert placement.holds(manifest("Namespace", "team-nlp"))
    assert placement.holds(manifest("ConfigMap", "rules", "team-nlp"))
    assert placement.holds(manifest("ClusterQueue", "team-nlp", **{"mlplatform.io/team": "nlp"}))
    assert not placement.holds(manifest("Namespace", "team-vision"))
    assert not placement.holds(manifest("ConfigMap", "rules", "team-vision"))
    assert not placement.holds(manifest("ClusterRole", "team-nlp"))  # named alike, but not labelled the team's
    assert not placement.holds(manifest("Deployment", "dashboard", "kubeflow"))
    assert not placement.holds_platform


# -- objects ---------------------------------------------------------------------------------


def test_kueue_queues_of_a_team_are_its_stacks(tmp_path, mirror, monkeypatch):
    """The lab with the GPU layer and tenancy only, its teams queued by Kueue: a team's
    ClusterQueue (cluster-scoped, labelled with the team) and LocalQueue go with the team."""
    monkeypatch.setenv("MLPLATFORM_MIRROR", str(mirror))
    document = yaml.safe_load((REPO_ROOT / "stacks" / "Pulumi.lab.yaml").read_text())
    for name, module in document["config"]["mlplatform:modules"].items():
        module["enabled"] = name in ("gpu", "tenancy")
    document["config"]["mlplatform:modules"]["tenancy"]["queueing"] = {"backend": "kueue"}
    unsplit = tmp_path / "unsplit"
    unsplit.mkdir()
    (unsplit / "Pulumi.lab.yaml").write_text(yaml.safe_dump(document))
    platform_file, team_file, moved = lab_split(tmp_path, document=document)
    renders = {}
    for path in (unsplit / "Pulumi.lab.yaml", platform_file, team_file):
        stack = path.name.removeprefix("Pulumi.").removesuffix(".yaml")
        config = stack_config_strings(yaml.safe_load(path.read_text())["config"])
        recorder, _ = run_program(stack, config, path.parent)
        renders[path] = keyed(manifests_of(recorder, stack))
    whole, platform, team = renders.values()
    assert not set(platform) & set(team)
    assert set(platform) | set(team) == set(whole)
    for key, manifest in [*platform.items(), *team.items()]:
        assert without_stack_label(manifest) == without_stack_label(whole[key]), key
    queues = {key for key in team if key[0] in ("ClusterQueue", "LocalQueue")}
    assert queues == {
        *(("ClusterQueue", "", f"team-{t['name']}") for t in moved),
        *(("LocalQueue", f"team-{t['name']}", "default") for t in moved),
    }
    assert {key[0] for key in platform} >= {"ClusterQueue", "ResourceFlavor", "Deployment"}


@pytest.fixture(scope="module")
def split_renders(tmp_path_factory):
    """(unsplit, platform, team stack) renders of the lab, objects keyed by (kind, namespace,
    name), and the teams moved."""
    import os

    os.environ.setdefault("MLPLATFORM_MIRROR", str(REPO_ROOT.parent / "shared" / "upstream"))
    folder = tmp_path_factory.mktemp("team-stacks")
    platform_file, team_file, moved = lab_split(folder)
    renders = []
    for path in (platform_file, team_file):
        stack = path.name.removeprefix("Pulumi.").removesuffix(".yaml")
        recorder, _ = run_program(stack, stack_config_strings(yaml.safe_load(path.read_text())["config"]), folder)
        renders.append((recorder, root_outputs()))
    unsplit = render_shared("lab")
    platform = manifests_of(renders[0][0], "lab")
    team = manifests_of(renders[1][0], "lab-teams-a")
    return unsplit, platform, team, [outputs for _, outputs in renders], moved


def root_outputs() -> dict[str, Any]:
    """What the last program run exported on its root stack resource, resolved."""
    import pulumi
    from pulumi.runtime.settings import get_root_resource

    resolved: dict[str, Any] = {}

    @pulumi.runtime.test
    def read():
        return pulumi.Output.from_input(get_root_resource().outputs).apply(resolved.update)

    read()
    return resolved


def keyed(manifests: list[dict[str, Any]]) -> dict[tuple[str, str, str], dict[str, Any]]:
    found = {}
    for manifest in manifests:
        metadata = manifest["metadata"]
        key = (manifest["kind"], metadata.get("namespace", ""), metadata["name"])
        assert key not in found, key
        found[key] = manifest
    return found


def without_stack_label(manifest: dict[str, Any]) -> dict[str, Any]:
    manifest = copy.deepcopy(manifest)
    manifest["metadata"].get("labels", {}).pop(STACK_LABEL, None)
    return manifest


def test_platform_and_team_stack_hold_the_unsplit_objects_each_once(split_renders):
    unsplit, platform, team, _, _ = split_renders
    whole, held_by_platform, held_by_team = keyed(unsplit), keyed(platform), keyed(team)
    assert not set(held_by_platform) & set(held_by_team)
    assert set(held_by_platform) | set(held_by_team) == set(whole)
    for held, stack in ((held_by_platform, "lab"), (held_by_team, "lab-teams-a")):
        for key, manifest in held.items():
            assert manifest["metadata"]["labels"][STACK_LABEL] == stack, key
            assert without_stack_label(manifest) == without_stack_label(whole[key]), key


def test_the_team_stack_holds_its_teams_objects_from_every_module(split_renders):
    _, _, team, _, moved = split_renders
    namespaces = {f"team-{t['name']}" for t in moved}
    kinds = set()
    for manifest in team:
        metadata = manifest["metadata"]
        owner = metadata.get("namespace") or (metadata["name"] if manifest["kind"] == "Namespace" else None)
        assert owner in namespaces or metadata["labels"].get("mlplatform.io/team") in {t["name"] for t in moved}
        kinds.add(manifest["kind"])
    modules = {m["metadata"]["labels"].get("mlplatform.io/module") for m in team}
    # Tenancy's own, and what workspaces, notebooks, pipelines and MLflow put in team namespaces.
    assert {"tenancy", "workspaces", "notebooks", "pipelines", "mlflow"} <= modules, modules
    assert {"Namespace", "ResourceQuota", "RoleBinding", "NetworkPolicy", "Profile"} <= kinds, kinds


def test_the_platform_holds_no_object_of_a_moved_team(split_renders):
    _, platform, _, _, moved = split_renders
    names = {t["name"] for t in moved}
    namespaces = {f"team-{name}" for name in names}
    for manifest in platform:
        metadata = manifest["metadata"]
        assert metadata.get("namespace") not in namespaces
        assert metadata["labels"].get("mlplatform.io/team") not in names
        if "namespace" not in metadata:
            # A cluster-scoped object named after a moved team would be its, unlabelled.
            assert metadata["name"] not in namespaces, (manifest["kind"], metadata["name"])


def test_stack_outputs_say_which_teams_each_stack_holds(split_renders):
    _, _, _, renders, moved = split_renders
    platform, team = renders
    assert platform["teamStacks"] == ["lab-teams-a"]
    assert set(platform["teamNamespaces"]) == {"vision"}
    assert team["platformStack"] == "lab"
    assert team["teamNamespaces"] == {t["name"]: f"team-{t['name']}" for t in moved}
    assert "endpoints" not in team
