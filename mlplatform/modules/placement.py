"""Which stack holds which of a platform's objects, where teams live in team stacks
(config/team_stacks.py).

Every stack of a platform runs the same composition over the same resolved config; each
registers only the objects it holds. A team's objects are those in its namespace, its Namespace
itself, and cluster-scoped objects labelled with its name (`mlplatform.io/team`: its Kueue
ClusterQueue, its Kubeflow Profile); they belong to the stack listing the team. Everything else
is the platform stack's. So the objects of one team are the same wherever the team is listed,
and adding a team to a team stack changes that stack alone.

What depends on an object another stack holds depends on one stand-in component instead: the
other stack is applied first (the platform before its team stacks), which the program checks."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pulumi

TEAM_LABEL = "mlplatform.io/team"
HELD_ELSEWHERE_TYPE = "mlplatform:core:HeldElsewhere"


@dataclass(frozen=True)
class Placement:
    # The stack the program runs as, and the platform stack whose settings it runs.
    stack: str
    platform_stack: str
    # Team name -> its stack, and team namespace -> its stack, for teams of team stacks.
    team_stack: Mapping[str, str]
    namespace_stack: Mapping[str, str]

    @property
    def holds_platform(self) -> bool:
        return self.stack == self.platform_stack

    def holder(self, manifest: Mapping[str, Any]) -> str:
        """The stack holding the object a manifest describes."""
        metadata = manifest.get("metadata") or {}
        namespace = metadata.get("namespace")
        if isinstance(namespace, str) and namespace:
            return self.namespace_stack.get(namespace, self.platform_stack)
        if manifest.get("kind") == "Namespace" and manifest.get("apiVersion") == "v1":
            return self.namespace_stack.get(metadata.get("name"), self.platform_stack)
        labels = metadata.get("labels") or {}
        team = labels.get(TEAM_LABEL) if isinstance(labels, Mapping) else None
        return self.team_holder(team) if isinstance(team, str) else self.platform_stack

    def team_holder(self, team: str) -> str:
        return self.team_stack.get(team, self.platform_stack)

    def holds(self, manifest: Mapping[str, Any]) -> bool:
        return self.holder(manifest) == self.stack

    def holds_team(self, team: str) -> bool:
        return self.team_holder(team) == self.stack


# The running program's placement; None: the stack holds all of its objects (no team stacks).
_current: Placement | None = None
_stand_in: pulumi.ComponentResource | None = None


def use(placement: Placement | None) -> None:
    """Set by the program before any module is built (and anew for each run under mocks)."""
    global _current, _stand_in
    _current = placement
    _stand_in = None


def holds(manifest: Mapping[str, Any]) -> bool:
    return _current is None or _current.holds(manifest)


def holds_platform() -> bool:
    """Whether the platform's own objects (not a team's) are registered here."""
    return _current is None or _current.holds_platform


def held_elsewhere() -> pulumi.Resource:
    """What stands for an object another stack holds: one component without children, so that
    depending on it waits for nothing."""
    global _stand_in
    if _stand_in is None:
        _stand_in = pulumi.ComponentResource(HELD_ELSEWHERE_TYPE, "held-elsewhere")
        _stand_in.register_outputs({})
    return _stand_in
