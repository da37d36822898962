"""The Pulumi engine on the local control plane: cost, scale, idempotency, crash recovery, drift.

    python benchmarks/bench_engine.py [--quick] [--stacks lab openshift cloud] [--ups 20]
        [--crashes 20] [--fresh-crashes 3] [--drifts 20] [--teams 10 100 500]
        [--team-stacks 500 10] [--only cost scale team-stacks crash fresh-crash drift]

- cost and idempotency, per stack on a fresh plane: cold `up` (readiness awaited) with its
  resource count and the peak memory of the CLI, the language host with the program, and the
  provider; then `up` again N-1 times, each of which must change nothing; `refresh`, then
  `preview`, which must show no change; the no-op preview's time per resource;
- crash recovery: `kill -9` of `pulumi up` (the CLI's process) at a random moment of an update
  that adds or removes 5 teams (core, GPU layer and tenancy; ML services off), then the one
  recovery command, `mlplatform recover`, then `up`; success when that `up` succeeds and the
  labelled cluster inventory equals the state;
- crash recovery of a fresh install: `kill -9` of a first `up` (core, GPU layer, two teams)
  run as `mlplatform up` runs it, its state written only at the end (mlplatform.checkpoints),
  then `mlplatform recover`, `up`; the same check, then `destroy`, which must leave no object,
  so that the next trial is a fresh install again;
- drift: 20 out-of-band changes to objects of the lab stack, one `refresh` + `preview` (does it
  show each changed object? an object the preview cannot plan stops it, so it previews again
  without those) and one `up --continue-on-error` (is each field back?);
- cold `up`s (cost, scale) run as `mlplatform up` runs them: a stack that holds no resources
  writes its state once at the end; `--every-step-checkpoints` checkpoints every step instead;
- team stacks: the scale section's 500 teams split over 10 team stacks: cold `up` of the
  platform and of each team stack, state per team; one team added to a team stack: its
  `preview` and `up`, and the platform's `preview` after it (no change);
- scale, last because it is the longest: the lab stack's core, GPU layer and tenancy with 10,
  100, 500 teams: cold `up`, no-op `preview`, and the `preview` of adding one team.

Every figure is printed beside the load average it was taken under (2-core machines are shared
by the plane, the CLI and the provider).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import re
import signal
import statistics
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import yaml
from bench_gitops_reliability import _contains, _expected, _live, drifts
from bench_tenancy_scale import stack_with_teams
from plane_support import ENGINE_PORT_BASE, REPO_ROOT, fresh_plane, load, machine, render_export, stop_plane

from mlplatform import checkpoints
from mlplatform.engine import EngineError, EngineStack, change_summary, changes, up_summary
from mlplatform.file_backend import stack_files
from tests.e2e.test_render_apply import labelled_inventory
from tests.engine.test_pulumi_lifecycle import stack_secrets

# Planes by index, 100 ports apart: cost 0-2, crash 3, drift 4, scale 5 and up, the fresh
# install's crash 19; below 20, so
# within the engine's 2000 ports of the benchmarks' range (plane_support).
COST_PLANES, CRASH_PLANE, DRIFT_PLANE, SCALE_PLANES, FRESH_CRASH_PLANE = 0, 3, 4, 5, 19


class ProcessTreeUsage:
    """Peak resident memory of a process tree, sampled every 0.2 s: the total, and per program
    (the CLI, the language host and the program it runs, the provider); and the CPU seconds
    each program used (as last sampled: a process's final 0.2 s may be missed)."""

    def __init__(self, root_pid: int) -> None:
        self.root = root_pid
        self.total = 0
        self.by_name: dict[str, int] = defaultdict(int)
        self._cpu_ticks: dict[int, tuple[str, int]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @staticmethod
    def _name(pid: int) -> str | None:
        """Which program a process is; None once it has no command line (a zombie)."""
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        if not cmdline:
            return None
        text = " ".join(part.decode(errors="replace") for part in cmdline.split(b"\0"))
        if "pulumi-resource-kubernetes" in text:
            return "provider"
        if "pulumi-language-python" in text:
            # The host and the program it runs through the exec shim, counted together.
            return "language host + program"
        if text.startswith("pulumi") or "/pulumi " in f"{text} ":
            return "CLI"
        return "other"

    def _sample(self) -> None:
        children: dict[int, list[int]] = defaultdict(list)
        stats: dict[int, list[str]] = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(") ", 1)[1].split()
                pid = int(stat.parent.name)
                children[int(fields[1])].append(pid)
                stats[pid] = fields
            except (OSError, IndexError, ValueError):
                continue
        tree, todo = [], [self.root]
        while todo:
            pid = todo.pop()
            tree.append(pid)
            todo.extend(children.get(pid, []))
        total, by_name = 0, defaultdict(int)
        for pid in tree:
            if pid not in stats:
                continue
            try:
                # utime and stime, the 14th and 15th fields of stat. The most seen, under the
                # last name seen: an exiting process loses its threads' times and, as a zombie,
                # its command line.
                ticks = int(stats[pid][11]) + int(stats[pid][12])
                last_name, seen = self._cpu_ticks.get(pid) or ("other", 0)
                name = self._name(pid) or last_name
                self._cpu_ticks[pid] = (name, max(ticks, seen))
                rss_kib = next(
                    int(line.split()[1])
                    for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                    if line.startswith("VmRSS:")
                )
                by_name[name] += rss_kib
                total += rss_kib
            except (OSError, StopIteration, ValueError):
                continue
        self.total = max(self.total, total)
        for name, rss in by_name.items():
            self.by_name[name] = max(self.by_name[name], rss)

    def cpu_seconds(self, name: str) -> float:
        ticks = sum(used for program, used in self._cpu_ticks.values() if program == name)
        return ticks / os.sysconf("SC_CLK_TCK")

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self._sample()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def sampled(engine: EngineStack, *args: str) -> tuple[float, str, ProcessTreeUsage]:
    """A pulumi command with its processes sampled; (seconds, stdout, samples)."""
    started = time.monotonic()
    proc = engine.popen(*args, capture=True)
    usage = ProcessTreeUsage(proc.pid)
    stdout, stderr = proc.communicate()
    usage.stop()
    seconds = time.monotonic() - started
    if proc.returncode != 0:
        raise SystemExit(f"pulumi {args[0]} failed:\n{(stdout + stderr)[-3000:]}")
    return seconds, stdout, usage


def as_mlplatform_up(engine: EngineStack, every_step: bool = False) -> str:
    """The next `up` with checkpoints as `mlplatform up` decides them (state written once at the
    end when the stack holds no resources), or every step; says which."""
    for name in (checkpoints.SKIP, *checkpoints.WITHOUT_CHECKPOINTS_GO_RUNTIME):
        engine.extra_env.pop(name, None)
    if not every_step:
        engine.extra_env.update(checkpoints.up_env({}, checkpoints.is_fresh(engine.stack, engine.project, engine.env)))
    return "at the end" if engine.env.get(checkpoints.SKIP) == "true" else "every step"


def timed_up(engine: EngineStack, *extra: str) -> tuple[float, dict[str, int], ProcessTreeUsage]:
    """`pulumi up --json` with its memory sampled; (seconds, change summary, peaks)."""
    seconds, stdout, memory = sampled(engine, "up", "--yes", "--skip-preview", "--json", *extra)
    return seconds, up_summary(stdout), memory


def cpu_split(usage: ProcessTreeUsage) -> str:
    return " / ".join(f"{usage.cpu_seconds(name):.1f}" for name in ("CLI", "language host + program", "provider"))


def mib(kib: int) -> str:
    return f"{kib / 1024:.0f}"


def new_engine(stack: str, scratch: Path, index: int, stack_file: Path | None = None):
    if not 0 <= index < 20:
        raise SystemExit(f"engine plane {index}: only 20 fit the engine's ports")
    plane = fresh_plane(
        scratch / f"plane-{index}", ENGINE_PORT_BASE + 100 * index, "lab" if stack.startswith("scale") else stack
    )
    engine = EngineStack(stack, scratch / f"engine-{index}", state_dir=scratch / f"plane-{index}")
    engine.create(stack_file=stack_file, secrets=stack_secrets())
    return plane, engine


def cost_section(stacks: list[str], ups: int, scratch: Path, every_step: bool = False) -> None:
    print(f"\n## Engine cost and idempotency: cold `up`, then `up` {ups - 1} more times, refresh, preview")
    print(
        "| stack | resources | cold up s | its CPU s (CLI / host+program / provider) "
        "| peak MiB (CLI / host+program / provider / all) | re-up s (median) "
        "| re-ups with changes | refresh s | preview after refresh: changes | no-op preview s | ms/resource "
        "| its CPU s (CLI / host+program / provider) | state MB | cold up's checkpoints | load |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for index, stack in enumerate(stacks):
        plane, engine = new_engine(stack, scratch, COST_PLANES + index)
        try:
            saved = as_mlplatform_up(engine, every_step)
            cold_s, summary, memory = timed_up(engine)
            as_mlplatform_up(engine, every_step)
            resources = sum(summary.values())
            reup_s, dirty = [], []
            for attempt in range(2, ups + 1):
                seconds, summary, _ = timed_up(engine)
                reup_s.append(seconds)
                if changes(summary):
                    dirty.append(f"up {attempt}: {summary}")
            refresh = engine.pulumi("refresh", "--yes").check()
            preview = engine.pulumi("preview", "--json").check()
            after_refresh = changes(change_summary(preview))
            noop_s, _, noop_usage = sampled(engine, "preview", "--json")
            peaks = memory.by_name
            print(
                f"| {stack} | {resources} | {cold_s:.0f} | {cpu_split(memory)} | {mib(peaks['CLI'])} / "
                f"{mib(peaks['language host + program'])} / {mib(peaks['provider'])} / {mib(memory.total)} "
                f"| {statistics.median(reup_s) if reup_s else float('nan'):.1f} | {len(dirty)}/{ups - 1} "
                f"| {refresh.seconds:.0f} | {after_refresh} | {noop_s:.1f} "
                f"| {1000 * noop_s / max(resources, 1):.0f} | {cpu_split(noop_usage)} "
                f"| {state_megabytes(engine, stack):.1f} | {saved} | {load()} |",
                flush=True,
            )
            for line in dirty[:3]:
                print(f"changes on a repeated up: {line}")
        finally:
            stop_plane(plane)


def state_megabytes(engine: EngineStack, stack: str) -> float:
    """Size of the checkpoint the file backend rewrites after every step."""
    checkpoint = [p for p in stack_files(engine.backend, "mlplatform", stack) if p.name == f"{stack}.json"]
    return checkpoint[0].stat().st_size / 1e6 if checkpoint else float("nan")


def scale_section(sizes: list[int], scratch: Path, every_step: bool = False) -> None:
    print("\n## Scale: core + GPU layer + tenancy with N teams (ML services off)")
    print(
        "| teams | resources | state MB | cold up s | its CPU s (CLI / host+program / provider) | checkpoints "
        "| peak MiB (all) | no-op preview s | add one team: preview s | its changes | load |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for offset, count in enumerate(sizes):
        folder = scratch / f"scale-{count}"
        folder.mkdir()
        stack_file = stack_with_teams(count, folder)
        plane, engine = new_engine("lab", scratch, SCALE_PLANES + offset, stack_file=stack_file)
        try:
            saved = as_mlplatform_up(engine, every_step)
            cold_s, summary, usage = timed_up(engine)
            state_mb = state_megabytes(engine, "lab")
            noop = engine.pulumi("preview", "--json").check()
            (folder / "plus-one").mkdir()
            bigger = stack_with_teams(count + 1, folder / "plus-one")
            document = yaml.safe_load((engine.project / "stacks" / "Pulumi.lab.yaml").read_text())
            teams = yaml.safe_load(bigger.read_text())["config"]["mlplatform:modules"]["tenancy"]["teams"]
            document["config"]["mlplatform:modules"]["tenancy"]["teams"] = teams
            (engine.project / "stacks" / "Pulumi.lab.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
            plus_one = engine.pulumi("preview", "--json").check()
            print(
                f"| {count} | {sum(summary.values())} | {state_mb:.1f} | {cold_s:.0f} | {cpu_split(usage)} | {saved} "
                f"| {mib(usage.total)} | {noop.seconds:.1f} "
                f"| {plus_one.seconds:.1f} "
                f"| {change_summary(plus_one)} | {load()} |",
                flush=True,
            )
        finally:
            stop_plane(plane)


def team_stacks_section(teams: int, stacks: int, scratch: Path) -> None:
    """The scale section's stack with its teams split evenly over team stacks (the platform keeps
    none): cold `up` of the platform, then of each team stack; then one team added to the last
    team stack: its `preview` and `up`, and the platform's `preview`, which must show no change."""
    print(f"\n## Team stacks: core + GPU layer + tenancy, {teams} teams over {stacks} team stacks (ML services off)")
    folder = scratch / f"team-stacks-{teams}"
    folder.mkdir()
    document = yaml.safe_load(stack_with_teams(teams + 1, folder).read_text())
    tenancy = document["config"]["mlplatform:modules"]["tenancy"]
    everyone, added = tenancy["teams"][:teams], tenancy["teams"][teams]
    names = [f"lab-teams-{index:02d}" for index in range(stacks)]
    tenancy["teams"], tenancy["teamStacks"] = [], names
    platform_file = folder / "Pulumi.lab.yaml"
    platform_file.write_text(yaml.safe_dump(document, sort_keys=False))
    per_stack = -(-teams // stacks)
    plane, platform = new_engine("lab", scratch, SCALE_PLANES + 4, stack_file=platform_file)
    try:
        engines = []
        for index, name in enumerate(names):
            chunk = everyone[index * per_stack : (index + 1) * per_stack]
            path = folder / f"Pulumi.{name}.yaml"
            path.write_text(yaml.safe_dump({"config": {"mlplatform:platformStack": "lab", "mlplatform:teams": chunk}}))
            engines.append(platform.beside(name, path))
        print(
            "| stack | teams | resources | cold up s | its CPU s (CLI / host+program / provider) | peak MiB (all) | state MB | load |"
        )
        print("|---|---|---|---|---|---|---|---|")
        total_s = total_resources = total_mb = 0.0
        for engine in [platform, *engines]:
            as_mlplatform_up(engine)
            seconds, summary, usage = timed_up(engine)
            held = len(
                yaml.safe_load((engine.project / "stacks" / f"Pulumi.{engine.stack}.yaml").read_text())["config"].get(
                    "mlplatform:teams", []
                )
            )
            state_mb = state_megabytes(engine, engine.stack)
            total_s, total_resources, total_mb = (
                total_s + seconds,
                total_resources + sum(summary.values()),
                total_mb + state_mb,
            )
            print(
                f"| {engine.stack} | {held} | {sum(summary.values())} | {seconds:.1f} | {cpu_split(usage)} "
                f"| {mib(usage.total)} | {state_mb:.2f} | {load()} |",
                flush=True,
            )
        print(
            f"\nAll {teams} teams: {total_resources:.0f} resources, cold `up`s one after the other {total_s:.0f} s "
            f"({total_s / max(total_resources, 1):.3f} s per resource), state {total_mb:.1f} MB "
            f"({1000 * total_mb / teams:.0f} kB per team with the platform's share)"
        )
        last = engines[-1]
        noop = last.pulumi("preview", "--json").check()
        stack_path = last.project / "stacks" / f"Pulumi.{last.stack}.yaml"
        team_document = yaml.safe_load(stack_path.read_text())
        team_document["config"]["mlplatform:teams"].append(added)
        stack_path.write_text(yaml.safe_dump(team_document, sort_keys=False))
        as_mlplatform_up(last)
        plus_one = last.pulumi("preview", "--json").check()
        up_s, up_changes, _ = timed_up(last)
        platform_preview = platform.pulumi("preview", "--json").check()
        print(
            f"\n| {last.stack} (one team stack of {len(team_document['config']['mlplatform:teams']) - 1} teams) | s | changes |"
        )
        print("|---|---|---|")
        print(f"| no-op `preview` | {noop.seconds:.1f} | {change_summary(noop)} |")
        print(f"| add one team: `preview` | {plus_one.seconds:.1f} | {change_summary(plus_one)} |")
        print(f"| add one team: `up` | {up_s:.1f} | {up_changes} |")
        print(
            f"| the platform's `preview` after it | {platform_preview.seconds:.1f} | {change_summary(platform_preview)} |"
        )
        print(f"load {load()}", flush=True)
    finally:
        stop_plane(plane)


CRASH_TEAMS = 5


def _set_crash_teams(engine: EngineStack, present: bool, base: dict) -> None:
    document = copy.deepcopy(base)
    teams = document["config"]["mlplatform:modules"]["tenancy"]["teams"]
    if present:
        teams += [
            {"name": f"crash{i}", "groups": {"edit": [f"crash{i}"]}, "quota": {"cpu": "1", "memory": "1Gi"}}
            for i in range(CRASH_TEAMS)
        ]
    (engine.project / "stacks" / "Pulumi.lab.yaml").write_text(yaml.safe_dump(document, sort_keys=False))


def inventory_gap(engine: EngineStack, plane) -> tuple[int, int]:
    state = engine.state_inventory()
    cluster = labelled_inventory(plane, {kind for kind, _, _ in state}, "lab")
    return len(cluster - state), len(state - cluster)


def crash_section(trials: int, seed: int, scratch: Path) -> None:
    print(
        f"\n## Crash recovery: kill -9 of `pulumi up` adding or removing {CRASH_TEAMS} teams, `mlplatform recover`, `up`"
    )
    # Core, GPU layer and two teams: the kill lands in an update of team objects either way, and
    # without the ML services each trial's recover and up take minutes instead of ten.
    folder = scratch / "crash"
    folder.mkdir()
    plane, engine = new_engine("lab", scratch, CRASH_PLANE, stack_file=stack_with_teams(2, folder))
    try:
        stack_file = engine.project / "stacks" / "Pulumi.lab.yaml"
        base = yaml.safe_load(stack_file.read_text())
        timed_up(engine)
        _set_crash_teams(engine, True, base)
        window, _, _ = timed_up(engine)
        print(f"update window: {window:.1f} s to add {CRASH_TEAMS} teams (load {load()})")
        print("| trial | change | kill at s | pending ops after kill | recover | up after | orphans | missing | load |")
        print("|---|---|---|---|---|---|---|---|---|")
        chance = random.Random(seed)
        present, successes = True, 0
        for trial in range(1, trials + 1):
            present = not present
            _set_crash_teams(engine, present, base)
            delay = chance.uniform(0, window)
            proc = engine.popen("up", "--yes", "--skip-preview")
            time.sleep(delay)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            try:
                pending = str(engine.pending_operations())
            except EngineError as exc:  # the checkpoint itself could not be read
                pending = "unreadable: " + str(exc).strip().splitlines()[-1][:80]
            recovered = engine.recover()
            up = engine.pulumi("up", "--yes", "--skip-preview")
            orphans, missing = inventory_gap(engine, plane)
            ok = recovered.returncode == 0 and up.returncode == 0 and orphans == 0 and missing == 0
            successes += ok
            print(
                f"| {trial} | {'add' if present else 'remove'} | {delay:.1f} | {pending} "
                f"| {'ok' if recovered.returncode == 0 else 'failed'} | {'ok' if up.returncode == 0 else 'failed'} "
                f"| {orphans} | {missing} | {load()} |",
                flush=True,
            )
            if up.returncode != 0:
                print("up failed: " + (up.stdout + up.stderr).strip().splitlines()[-1][:300])
        print(f"\nrecovered and converged: {successes}/{trials}")
    finally:
        stop_plane(plane)


def fresh_crash_section(trials: int, seed: int, scratch: Path) -> None:
    print(
        "\n## Crash recovery of a fresh install: kill -9 of a first `pulumi up` that writes its state only at "
        "the end (PULUMI_SKIP_CHECKPOINTS), `mlplatform recover`, `up`"
    )
    # Core, GPU layer and two teams; `destroy` between trials empties state and cluster, so each
    # trial's `up` is a fresh install again.
    folder = scratch / "fresh-crash"
    folder.mkdir()
    plane, engine = new_engine("lab", scratch, FRESH_CRASH_PLANE, stack_file=stack_with_teams(2, folder))

    def fresh_env() -> bool:
        return as_mlplatform_up(engine) == "at the end"

    try:
        if not fresh_env():
            raise SystemExit("a new stack was not judged fresh")
        window, summary, _ = timed_up(engine)
        kinds = {kind for kind, _, _ in engine.state_inventory()}
        engine.pulumi("destroy", "--yes", "--skip-preview").check()
        print(f"fresh install window: {window:.1f} s for {sum(summary.values())} resources (load {load()})")
        print(
            "| trial | kill at s | state resources after kill | cluster objects after kill | fresh again "
            "| recover | up after | orphans | missing | left after destroy | load |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        chance = random.Random(seed)
        successes = 0
        for trial in range(1, trials + 1):
            if not fresh_env():
                raise SystemExit(f"trial {trial}: the state was not empty before the install")
            delay = chance.uniform(0, window)
            proc = engine.popen("up", "--yes", "--skip-preview")
            time.sleep(delay)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            in_state = len(engine.state_inventory())
            in_cluster = len(labelled_inventory(plane, kinds, "lab"))
            recovered = engine.recover()
            again = fresh_env()
            up = engine.pulumi("up", "--yes", "--skip-preview")
            orphans, missing = inventory_gap(engine, plane)
            destroy = engine.pulumi("destroy", "--yes", "--skip-preview")
            left = len(labelled_inventory(plane, kinds, "lab"))
            ok = recovered.returncode == 0 and up.returncode == 0 and orphans == missing == 0
            successes += ok and destroy.returncode == 0 and left == 0
            print(
                f"| {trial} | {delay:.1f} | {in_state} | {in_cluster} | {again} "
                f"| {'ok' if recovered.returncode == 0 else 'failed'} | {'ok' if up.returncode == 0 else 'failed'} "
                f"| {orphans} | {missing} | {left} | {load()} |",
                flush=True,
            )
            for name, result in (("recover", recovered), ("up", up), ("destroy", destroy)):
                if result.returncode != 0:
                    print(f"{name} failed: " + (result.stdout + result.stderr).strip().splitlines()[-1][:300])
        print(f"\nrecovered and converged: {successes}/{trials}")
    finally:
        stop_plane(plane)


def _urn_suffix(manifest: dict) -> str:
    api_version, kind = manifest["apiVersion"], manifest["kind"]
    group_version = api_version if "/" in api_version else f"core/{api_version}"
    meta = manifest["metadata"]
    name = f"{meta['namespace']}/{meta['name']}" if meta.get("namespace") else meta["name"]
    return f"kubernetes:{group_version}:{kind}::{name}"


def _reason(message: str) -> str:
    """The gist of an engine error: 'field conflict', 'immutable field' or its first words."""
    for gist in ("field conflict", "immutable", "not found", "Forbidden"):
        if gist.lower() in message.lower():
            return gist
    return " ".join(message.split()[:8])


def drift_section(count: int, scratch: Path) -> None:
    print(f"\n## Drift: {count} out-of-band changes, `pulumi refresh` + `preview`, then `pulumi up`")
    plane, engine = new_engine("lab", scratch, DRIFT_PLANE)
    try:
        timed_up(engine)
        manifests = render_export("lab", scratch / "drift-render")
        chosen = drifts(manifests)[:count]
        expected = {d.name: _expected(d, plane) for d in chosen}
        took = {}
        for drift in chosen:
            try:
                drift.change(plane, drift.manifest)
                live = _live(plane, drift.manifest)
                took[drift.name] = live is None or not _contains(drift.probe(live), expected[drift.name])
            except AssertionError:
                took[drift.name] = False
        refresh = engine.pulumi("refresh", "--yes")
        # A preview stops at the first object it cannot plan (reported as an error on its URN),
        # which would hide every later change: preview again without the objects that errored.
        steps, excluded, previews = [], [], 0
        while True:
            previews += 1
            preview = engine.pulumi("preview", "--json", *[arg for urn in excluded for arg in ("--exclude", urn)])
            document = json.loads(preview.stdout or "{}")
            steps += [s for s in document.get("steps", []) if s.get("op") != "same"]
            errors = [d for d in document.get("diagnostics", []) if d.get("severity") == "error" and d.get("urn")]
            steps += [{"urn": d["urn"], "op": "error: " + _reason(d["message"])} for d in errors]
            new_errors = [d["urn"] for d in errors if d["urn"] not in excluded]
            if preview.returncode == 0 or not new_errors or previews == len(chosen):
                break
            excluded += new_errors
        up = engine.pulumi("up", "--yes", "--skip-preview", "--continue-on-error")
        print("| out-of-band change | change took | refresh + preview shows it | up repairs |")
        print("|---|---|---|---|")
        detected = planned = repaired = 0
        for drift in chosen:
            suffix = _urn_suffix(drift.manifest)
            ops = sorted({s["op"] for s in steps if s["urn"].endswith(suffix)})
            live = _live(plane, drift.manifest)
            fixed = live is not None and _contains(drift.probe(live), expected[drift.name])
            detected += bool(ops)
            planned += any(not op.startswith("error") for op in ops)
            repaired += fixed
            print(
                f"| {drift.name} | {'yes' if took[drift.name] else 'no'} | {', '.join(ops) or 'no'} | {'yes' if fixed else 'no'} |"
            )
        print(
            f"\ndetected {detected}/{len(chosen)} ({planned} as a planned change, the rest as an error), "
            f"repaired {repaired}/{len(chosen)} "
            f"(refresh {'ok' if refresh.returncode == 0 else 'failed'} in {refresh.seconds:.0f} s, "
            f"{previews} preview(s), the last {'ok' if preview.returncode == 0 else 'failed'}, "
            f"up {'ok' if up.returncode == 0 else 'failed'} in {up.seconds:.0f} s); load {load()}"
        )
        if up.returncode != 0:
            print("up: " + re.sub(r"\s+", " ", (up.stdout + up.stderr)[-600:]))
    finally:
        stop_plane(plane)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: lab only, 3 ups, 3 crashes, 10 and 100 teams, 20 teams over 2 team stacks",
    )
    parser.add_argument("--stacks", nargs="+", default=["lab", "openshift", "cloud"])
    parser.add_argument("--ups", type=int, default=20)
    parser.add_argument("--crashes", type=int, default=20)
    parser.add_argument("--drifts", type=int, default=20)
    parser.add_argument("--teams", type=int, nargs="+", default=[10, 100, 500])
    parser.add_argument("--only", nargs="+", choices=["cost", "scale", "team-stacks", "crash", "fresh-crash", "drift"])
    parser.add_argument(
        "--team-stacks",
        type=int,
        nargs=2,
        default=[500, 10],
        metavar=("TEAMS", "STACKS"),
        help="the team-stacks section: TEAMS teams split over STACKS team stacks",
    )
    parser.add_argument("--fresh-crashes", type=int, default=3, help="kill -9 trials of a fresh install")
    parser.add_argument("--seed", type=int, default=20261201, help="seed of the kill moments")
    parser.add_argument(
        "--every-step-checkpoints",
        action="store_true",
        help="cold ups with per-step checkpoints (before a fresh install wrote its state once at the end)",
    )
    args = parser.parse_args()
    if args.quick:
        args.stacks, args.ups, args.crashes, args.teams = ["lab"], 3, 3, [10, 100]
        args.team_stacks = [20, 2]
    # The 500-team cold `up` is the longest step of all (tens of minutes), so scale goes last: a
    # run cut short still holds the idempotency, crash and drift tables.
    sections = args.only or ["cost", "crash", "fresh-crash", "drift", "team-stacks", "scale"]
    print(f"# Pulumi engine on the local plane — {time.strftime('%Y-%m-%d %H:%M')}, {machine()}, load {load()}")
    with tempfile.TemporaryDirectory(prefix="mlp-engine-") as folder:
        scratch = Path(folder)
        if "cost" in sections:
            cost_section(args.stacks, args.ups, scratch, args.every_step_checkpoints)
        if "crash" in sections:
            crash_section(args.crashes, args.seed, scratch)
        if "fresh-crash" in sections:
            fresh_crash_section(args.fresh_crashes, args.seed, scratch)
        if "drift" in sections:
            drift_section(args.drifts, scratch)
        if "team-stacks" in sections:
            team_stacks_section(*args.team_stacks, scratch)
        if "scale" in sections:
            scale_section(args.teams, scratch, args.every_step_checkpoints)


if __name__ == "__main__":
    os.chdir(REPO_ROOT)
    main()
