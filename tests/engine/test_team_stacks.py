"""Team stacks for real: a platform stack and a team stack of the same project on one plane.

The team stack refuses to apply before its platform; once both are up, each stack's labelled
objects in the cluster are what its state holds; a team added to the team stack is created by
that stack alone (its preview creates the team's objects and nothing else; the platform's
preview shows no change); destroy, team stack first, leaves nothing.

The stack is the lab's with the GPU layer and tenancy only, so that it stays small enough for
CI; the team stacks' unit tests (tests/unit/test_team_stacks.py) cover what the other modules
and Kueue put in team namespaces. (Kueue stays off here: its aggregated visibility API has no
server on the simulated plane, so the namespace controller, which lists every API before it
empties a namespace, would hold a team namespace's deletion until the platform's goes too.)"""

from __future__ import annotations

import copy

import yaml

from mlplatform.engine import EngineStack, change_summary, changes
from mlplatform.paths import REPO_ROOT
from mlplatform.render import render_manifests
from tests.e2e.conftest import start_plane
from tests.e2e.test_render_apply import labelled_inventory

# The engine and the mirror, checked once for the module (autouse).
from tests.engine.test_pulumi_lifecycle import engine_ready  # noqa: F401

PORT_OFFSET = 1000
TEAM_STACK = "lab-teams-a"
ENGINE_ENV = {"PULUMI_SKIP_CHECKPOINTS": "true"}


def split_stacks(folder):
    """The lab with the GPU layer and tenancy only: one team kept, two in the team stack, and a
    fourth team to add later."""
    document = yaml.safe_load((REPO_ROOT / "stacks" / "Pulumi.lab.yaml").read_text())
    for name, module in document["config"]["mlplatform:modules"].items():
        module["enabled"] = name in ("gpu", "tenancy")
    tenancy = document["config"]["mlplatform:modules"]["tenancy"]
    teams = tenancy["teams"]
    assert len(teams) >= 3
    added = copy.deepcopy(teams[2])
    added["name"] = "forecasting"
    tenancy["teams"], tenancy["teamStacks"] = teams[:1], [TEAM_STACK]
    platform = folder / "Pulumi.lab.yaml"
    platform.write_text(yaml.safe_dump(document, sort_keys=False))
    team = folder / f"Pulumi.{TEAM_STACK}.yaml"
    team.write_text(yaml.safe_dump({"config": {"mlplatform:platformStack": "lab", "mlplatform:teams": teams[1:3]}}))
    return platform, team, added


def held(plane, engine: EngineStack) -> set:
    state = engine.state_inventory()
    cluster = labelled_inventory(plane, {kind for kind, _, _ in state}, engine.stack)
    assert cluster == state, f"{engine.stack}: orphans {sorted(cluster - state)}; missing {sorted(state - cluster)}"
    return state


def test_a_team_stack_adds_a_team_without_touching_the_platform(tmp_path):
    files = tmp_path / "files"
    files.mkdir()
    platform_file, team_file, added = split_stacks(files)
    plane = start_plane(tmp_path / "plane", PORT_OFFSET, "lab")
    try:
        platform = EngineStack("lab", tmp_path / "engine", state_dir=tmp_path / "plane", extra_env=ENGINE_ENV)
        platform.create(stack_file=platform_file)
        team = platform.beside(TEAM_STACK, team_file)

        early = team.pulumi("preview")
        assert early.returncode != 0
        assert "run `pulumi up --stack lab` first" in early.stdout + early.stderr, (early.stdout + early.stderr)[-2000:]

        platform.pulumi("up", "--yes", "--skip-preview").check()
        up = team.pulumi("up", "--yes", "--skip-preview").check()
        print(f"\nteam stack: up in {up.seconds:.0f}s")
        platform_objects, team_objects = held(plane, platform), held(plane, team)
        namespaces = {name for kind, _, name in team_objects if kind == "Namespace"}
        assert namespaces == {"team-nlp", "team-analytics"}, namespaces
        assert not platform_objects & team_objects

        # One team more, in the team stack's file alone.
        project_file = team.project / "stacks" / f"Pulumi.{TEAM_STACK}.yaml"
        document = yaml.safe_load(project_file.read_text())
        document["config"]["mlplatform:teams"].append(added)
        project_file.write_text(yaml.safe_dump(document, sort_keys=False))
        team_file.write_text(project_file.read_text())
        expected = {
            (m["kind"], m["metadata"].get("namespace", ""), m["metadata"]["name"])
            for m in render_manifests(str(team_file))
        } - team_objects
        assert expected and all(ns == "team-forecasting" or ns == "" for _, ns, _ in expected), expected

        preview = team.pulumi("preview", "--json").check()
        summary = change_summary(preview)
        assert summary.get("create") == len(expected) and changes(summary) == len(expected), (summary, len(expected))
        unchanged = platform.pulumi("preview", "--expect-no-changes", "--json").check()
        assert changes(change_summary(unchanged)) == 0, change_summary(unchanged)
        team.pulumi("up", "--yes", "--skip-preview").check()
        assert held(plane, team) - team_objects == expected
        again = team.pulumi("preview", "--expect-no-changes", "--json").check()
        assert changes(change_summary(again)) == 0, change_summary(again)

        team.pulumi("destroy", "--yes", "--skip-preview").check()
        platform.pulumi("destroy", "--yes", "--skip-preview").check()
        kinds = {kind for kind, _, _ in platform_objects | team_objects}
        for engine in (team, platform):
            plane.wait_for(
                f"no object of stack {engine.stack} left",
                lambda stack=engine.stack: not labelled_inventory(plane, kinds, stack),
                timeout=300,
            )
            assert engine.state_inventory() == set()
    finally:
        plane.down(check=False)
