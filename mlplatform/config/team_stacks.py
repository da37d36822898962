"""Team stacks: stacks of the project that hold some of a platform stack's teams.

A team stack's file holds two keys: `mlplatform:platformStack` (the stack whose settings its
teams get) and `mlplatform:teams` (its teams, written as `modules.tenancy.teams` entries are).
The platform stack lists it under `modules.tenancy.teamStacks`. Both sides resolve the same
whole config (the platform's settings, every stack's teams, judged together), and each holds
its own part of the objects (modules/placement.py). Problems in a team stack's teams name its
file and its key path, not the merged list's."""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mlplatform.config import rules
from mlplatform.config.problems import ConfigError, Problem

PLATFORM_KEY = "mlplatform:platformStack"
TEAMS_KEY = "mlplatform:teams"
TEAM_STACK_KEYS = (PLATFORM_KEY, TEAMS_KEY)
# Where a platform stack's own teams sit, as a problem's key path names them.
_MERGED_TEAM = re.compile(r"^mlplatform:modules\.tenancy\.teams\[(\d+)\](.*)$")


@dataclass(frozen=True)
class TeamStack:
    stack: str
    source: str
    platform: str
    # As written: typed with the platform's, so that defaults and rules are the same.
    teams: list[Any]


def is_team_stack(raw: Mapping[str, Any]) -> bool:
    return PLATFORM_KEY in raw


def read_team_stack(raw: Mapping[str, Any], source: str, stack: str) -> TeamStack:
    """The team stack's two keys, checked for form; anything else in its file is refused."""
    problems = [
        Problem(
            source,
            str(key),
            "a team stack holds only its teams; every other setting is its platform stack's "
            f"(allowed: {', '.join(TEAM_STACK_KEYS)})",
        )
        for key in raw
        if key not in TEAM_STACK_KEYS
    ]
    platform = raw.get(PLATFORM_KEY)
    message = rules.STACK_NAME.problem(platform)
    if message is not None:
        problems.append(Problem(source, PLATFORM_KEY, message))
    elif platform == stack:
        problems.append(Problem(source, PLATFORM_KEY, f"{platform!r} is this stack (allowed: another stack's name)"))
    teams = raw.get(TEAMS_KEY, [])
    if not isinstance(teams, list):
        problems.append(Problem(source, TEAMS_KEY, f"expected a list of teams, got {type(teams).__name__}"))
    elif len(teams) > rules.MAX_TEAMS:
        problems.append(Problem(source, TEAMS_KEY, f"{len(teams)} teams (allowed: at most {rules.MAX_TEAMS})"))
    if problems:
        raise ConfigError(problems)
    return TeamStack(stack=stack, source=source, platform=str(platform), teams=list(teams))


def with_teams(platform_raw: Mapping[str, Any], team_stacks: list[TeamStack]) -> dict[str, Any]:
    """The platform's values with every team stack's teams after its own, in listed order."""
    merged = copy.deepcopy(dict(platform_raw))
    modules = merged.setdefault("mlplatform:modules", {})
    tenancy = modules.setdefault("tenancy", {})
    tenancy["teams"] = [*(tenancy.get("teams") or []), *(team for each in team_stacks for team in each.teams)]
    return merged


def own_team_count(platform_raw: Mapping[str, Any]) -> int:
    modules = platform_raw.get("mlplatform:modules")
    tenancy = modules.get("tenancy") if isinstance(modules, Mapping) else None
    teams = tenancy.get("teams") if isinstance(tenancy, Mapping) else None
    return len(teams) if isinstance(teams, list) else 0


def attributed(problems: list[Problem], own: int, team_stacks: list[TeamStack]) -> list[Problem]:
    """Problems of the merged teams list moved to the file and key path each team came from."""
    bounds = []
    start = own
    for each in team_stacks:
        bounds.append((start, start + len(each.teams), each))
        start += len(each.teams)
    moved = []
    for problem in problems:
        match = _MERGED_TEAM.match(problem.path)
        index = int(match.group(1)) if match else -1
        home = next((b for b in bounds if b[0] <= index < b[1]), None)
        if match is None or home is None:
            moved.append(problem)
            continue
        first, _, each = home
        moved.append(Problem(each.source, f"{TEAMS_KEY}[{index - first}]{match.group(2)}", problem.message))
    return moved
