"""Where the wall time of a `pulumi up` goes, from its `--json` event stream.

Each event line is stamped on arrival (the events' own timestamps are whole seconds). A step runs
from its `resourcePreEvent` to its `resOutputsEvent`; the state's dependencies (and parents) give
the graph. Printed: when the first step began (CLI, plugins and program start), the time with no
step in flight, the longest steps, the time per kind, and the critical path: from the last step
to finish, back through the dependency that finished last before it began, each link with its
own time and the wait before it.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field


@dataclass
class Step:
    urn: str
    op: str
    started: float
    finished: float | None = None

    @property
    def kind(self) -> str:
        return self.urn.split("::")[2].split("$")[-1]

    @property
    def name(self) -> str:
        return self.urn.split("::")[-1]

    @property
    def seconds(self) -> float:
        return (self.finished or self.started) - self.started


@dataclass
class Timeline:
    """Steps of one command, seconds from its start."""

    steps: dict[str, Step] = field(default_factory=dict)
    ended: float = 0.0
    lines: list[str] = field(default_factory=list)

    def record(self, line: str, at: float) -> None:
        self.lines.append(line)
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            return
        if "resourcePreEvent" in event:
            meta = event["resourcePreEvent"]["metadata"]
            self.steps[meta["urn"]] = Step(meta["urn"], meta["op"], at)
        elif "resOutputsEvent" in event:
            meta = event["resOutputsEvent"]["metadata"]
            step = self.steps.get(meta["urn"])
            if step is not None:
                step.finished = at

    def stdout(self) -> str:
        return "\n".join(self.lines)


def follow(proc: subprocess.Popen, started: float) -> tuple[Timeline, threading.Thread]:
    """Read the process' stdout in a thread, each line stamped as it arrives."""
    timeline = Timeline()

    def read() -> None:
        for line in proc.stdout:
            timeline.record(line.rstrip("\n"), time.monotonic() - started)
        timeline.ended = time.monotonic() - started

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return timeline, thread


def dependencies(exported: dict) -> dict[str, set[str]]:
    """URN -> the custom resources it waited for. A component stands for its descendants (to
    depend on one is to wait for all of them); a parent that is a custom resource is waited for
    too, as its children register after it."""
    resources = exported.get("deployment", {}).get("resources") or []
    custom = {r["urn"] for r in resources if r.get("custom")}
    children: dict[str, list[str]] = defaultdict(list)
    for resource in resources:
        if resource.get("parent"):
            children[resource["parent"]].append(resource["urn"])

    def expand(urn: str) -> set[str]:
        if urn in custom:
            return {urn}
        found: set[str] = set()
        for child in children.get(urn, ()):
            found |= expand(child)
        return found

    graph: dict[str, set[str]] = {}
    for resource in resources:
        if resource["urn"] not in custom:
            continue
        wanted = set(resource.get("dependencies") or [])
        for deps in (resource.get("propertyDependencies") or {}).values():
            wanted.update(deps)
        if resource.get("parent") in custom:
            wanted.add(resource["parent"])
        graph[resource["urn"]] = set().union(*(expand(u) for u in wanted)) if wanted else set()
    return graph


def finished_custom_steps(timeline: Timeline, graph: dict[str, set[str]]) -> list[Step]:
    """The steps that did work: finished, of custom resources (the graph's keys; components and
    the stack only span their children)."""
    return [s for u, s in timeline.steps.items() if s.finished is not None and u in graph]


def critical_path(steps: list[Step], graph: dict[str, set[str]]) -> list[tuple[Step, float]]:
    """(step, seconds waited between its latest-finishing dependency and its start), last first."""
    done = {s.urn: s for s in steps}
    if not done:
        return []
    current = max(done.values(), key=lambda s: s.finished)
    path = []
    while True:
        before = [
            done[d] for d in graph.get(current.urn, ()) if d in done and done[d].finished <= current.started + 0.5
        ]
        if not before:
            path.append((current, current.started))
            return path
        previous = max(before, key=lambda s: s.finished)
        path.append((current, current.started - previous.finished))
        current = previous


def idle_seconds(steps: list[Step]) -> float:
    """Seconds between the first step's start and the last step's end with no step in flight."""
    spans = sorted((s.started, s.finished) for s in steps)
    if not spans:
        return 0.0
    idle, reach = 0.0, spans[0][1]
    for start, end in spans[1:]:
        if start > reach:
            idle += start - reach
        reach = max(reach, end)
    return idle


def in_flight(steps: list[Step], first: float, last: float, slices: int = 10) -> list[int]:
    """Mean number of steps in flight in each tenth of [first, last]."""
    width = (last - first) / slices or 1.0
    loads = []
    for index in range(slices):
        low, high = first + index * width, first + (index + 1) * width
        busy = sum(max(0.0, min(high, s.finished) - max(low, s.started)) for s in steps)
        loads.append(round(busy / width))
    return loads


def report(timeline: Timeline, graph: dict[str, set[str]], top: int = 12) -> str:
    steps = finished_custom_steps(timeline, graph)
    if not steps:
        return "no steps recorded"
    first = min(s.started for s in steps)
    last = max(s.finished for s in steps)
    out = [
        f"custom resource steps {len(steps)}; first step began at {first:.1f} s; last ended at {last:.1f} s; "
        f"command ended at {timeline.ended:.1f} s; no step in flight for {idle_seconds(steps):.1f} s between"
    ]
    per_kind: dict[str, list[float]] = defaultdict(list)
    for step in steps:
        per_kind[step.kind].append(step.seconds)
    out.append("| kind | steps | sum s | max s |")
    out.append("|---|---|---|---|")
    for kind, times in sorted(per_kind.items(), key=lambda kv: -sum(kv[1]))[:top]:
        out.append(f"| {kind} | {len(times)} | {sum(times):.1f} | {max(times):.1f} |")
    out.append(
        "longest steps: "
        + ", ".join(f"{s.kind} {s.name} {s.seconds:.1f} s" for s in sorted(steps, key=lambda s: -s.seconds)[:top])
    )
    out.append("steps in flight, per tenth of the time: " + " ".join(str(n) for n in in_flight(steps, first, last)))
    path = critical_path(steps, graph)
    own = sum(step.seconds for step, _ in path)
    waited = sum(wait for _, wait in path)
    out.append(
        f"critical path: {len(path)} steps, {own:.1f} s in steps, {waited:.1f} s between them (the first: from the "
        "command's start)"
    )
    for step, wait in reversed(path):
        out.append(f"  +{wait:5.1f} s wait, {step.seconds:5.1f} s {step.op} {step.kind} {step.name}")
    return "\n".join(out)
