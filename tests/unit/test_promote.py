"""Promotion moves version pins between stacks and nothing else, and writes nothing unless
the target still validates and passes its gate."""

from __future__ import annotations

import errno
import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from ruamel.yaml import YAML

import mlplatform.promote
from mlplatform import safe_write
from mlplatform.cli import main
from mlplatform.config import ConfigError
from mlplatform.promote import PromotionError, apply_promotion, plan_promotion, with_pins, write_record
from mlplatform.safe_write import FileLockedError, atomic_write, write_lock
from mlplatform.validation import load_stack
from tests.conftest import REPO_ROOT

NEXT_KSERVE = "v0.17.0"
NEXT_KUEUE = "v0.20.0"


@pytest.fixture(autouse=True)
def _offline(mirror, monkeypatch):
    """The promotion gate runs the target's program: upstream sources come from the mirror."""
    monkeypatch.setenv("MLPLATFORM_MIRROR", str(mirror))


@pytest.fixture
def stacks(tmp_path: Path) -> dict[str, Path]:
    """Copies of the shipped stacks on a lock that also lists a newer KServe release, with
    lab pinned to it (a version bump made in the lab)."""
    lock = yaml.safe_load((REPO_ROOT / "versions.lock.yaml").read_text())
    lock["upstream"]["kserve"]["releases"] = {NEXT_KSERVE: {"source": "https://example.invalid/kserve"}}
    # A Kueue release the mirror does not hold: the program cannot build it offline.
    lock["upstream"]["kueue"]["releases"] = {NEXT_KUEUE: {"ref": NEXT_KUEUE, "mirror": "kueue-next"}}
    lock_path = tmp_path / "versions.lock.yaml"
    lock_path.write_text(yaml.safe_dump(lock, sort_keys=False))
    copies = {}
    for stack in ("lab", "openshift", "cloud"):
        pins = {"pins": {"kserve": NEXT_KSERVE}} if stack == "lab" else {}
        copy = tmp_path / f"Pulumi.{stack}.yaml"
        write_versions(copy, {"lock": str(lock_path), **pins})
        copies[stack] = copy
    return copies


def shipped(copy: Path) -> str:
    return (REPO_ROOT / "stacks" / copy.name).read_text()


def write_versions(copy: Path, versions: dict) -> None:
    """The shipped stack of the copy's name with this versions entry at the end of its config."""
    body = yaml.safe_dump({"mlplatform:versions": versions}, sort_keys=True, default_flow_style=False)
    copy.write_text(shipped(copy) + "".join(f"  {line}\n" for line in body.splitlines()))


def without_pins(text: str) -> str:
    """The text less the `pins:` line and every line indented below it."""
    kept, pins_indent = [], None
    for line in text.splitlines(keepends=True):
        indent = len(line) - len(line.lstrip())
        if pins_indent is not None and line.strip() and indent > pins_indent:
            continue
        pins_indent = indent if line.strip() == "pins:" else None
        if pins_indent is None:
            kept.append(line)
    return "".join(kept)


def lab_versions(stacks) -> dict[str, str]:
    return dict(sorted(load_stack(str(stacks["lab"])).upstream_versions().items()))


def strays(folder: Path) -> list[str]:
    """Temp and lock files a write may leave next to the file."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".Pulumi."))


@pytest.mark.slow
def test_pins_move_and_environment_settings_stay(stacks):
    before = stacks["openshift"].read_text()
    plan = plan_promotion(str(stacks["lab"]), str(stacks["openshift"]))
    assert plan.problems == []
    assert [(c.component, c.old, c.new) for c in plan.changes] == [("kserve", "v0.16.0", NEXT_KSERVE)]

    assert main(["promote", str(stacks["lab"]), str(stacks["openshift"])]) == 0
    after = stacks["openshift"].read_text()
    # Node pools, storage, ingress, teams, comments: byte for byte.
    assert without_pins(after) == without_pins(before)
    assert after.startswith(shipped(stacks["openshift"]))
    promoted = load_stack(str(stacks["openshift"]))
    assert promoted.upstream("kserve").version == NEXT_KSERVE
    assert promoted.upstream_versions() == load_stack(str(stacks["lab"])).upstream_versions()
    assert promoted.config.cluster == load_stack(str(stacks["openshift"])).config.cluster
    assert promoted.config.environment == "openshift"


@pytest.mark.slow
def test_promoting_twice_changes_nothing_more(stacks):
    assert main(["promote", str(stacks["lab"]), str(stacks["openshift"])]) == 0
    once = stacks["openshift"].read_bytes()
    plan = plan_promotion(str(stacks["lab"]), str(stacks["openshift"]))
    assert plan.changes == []
    assert main(["promote", str(stacks["lab"]), str(stacks["openshift"])]) == 0
    assert stacks["openshift"].read_bytes() == once


@pytest.mark.slow
def test_dry_run_writes_nothing(stacks, capsys):
    before = stacks["cloud"].read_bytes()
    assert main(["promote", str(stacks["lab"]), str(stacks["cloud"]), "--dry-run"]) == 0
    assert stacks["cloud"].read_bytes() == before
    out = capsys.readouterr().out
    assert f"kserve     v0.16.0  {NEXT_KSERVE}" in out
    assert "dry run: nothing written" in out


def test_failing_gate_leaves_the_target_untouched(stacks, monkeypatch, capsys):
    import mlplatform.promote

    before = stacks["openshift"].read_bytes()
    monkeypatch.setattr(mlplatform.promote, "render_gate", lambda stack, raw: ["policy X: violated"])
    assert main(["promote", str(stacks["lab"]), str(stacks["openshift"])]) == 1
    assert stacks["openshift"].read_bytes() == before
    assert "policy X: violated" in capsys.readouterr().err


def test_render_gate_blocks_a_version_the_program_cannot_install(stacks, monkeypatch, capsys):
    """The cloud stack runs Kueue; a Kueue release missing from the mirror cannot be built, so
    the cloud program fails with it and the cloud stack file stays as it is."""
    versions = yaml.safe_load(stacks["lab"].read_text())["config"]["mlplatform:versions"]
    write_versions(stacks["lab"], {**versions, "pins": {"kserve": NEXT_KSERVE, "kueue": NEXT_KUEUE}})
    before = stacks["cloud"].read_bytes()
    assert main(["promote", str(stacks["lab"]), str(stacks["cloud"])]) == 1
    assert stacks["cloud"].read_bytes() == before
    err = capsys.readouterr().err
    assert f"kueue {NEXT_KUEUE}: config/default is not in the mirror" in err, err


def test_invalid_target_after_promotion_is_refused(stacks):
    """A pin the target's lock does not know makes the target invalid: nothing is written."""
    lock = yaml.safe_load((REPO_ROOT / "versions.lock.yaml").read_text())
    plain_lock = stacks["cloud"].parent / "plain.lock.yaml"
    plain_lock.write_text(yaml.safe_dump(lock))
    write_versions(stacks["cloud"], {"lock": str(plain_lock)})
    before = stacks["cloud"].read_bytes()
    plan = plan_promotion(str(stacks["lab"]), str(stacks["cloud"]))
    assert any("mlplatform:versions.pins.kserve" in p and NEXT_KSERVE in p for p in plan.problems), plan.problems
    assert main(["promote", str(stacks["lab"]), str(stacks["cloud"])]) == 1
    assert stacks["cloud"].read_bytes() == before


@pytest.mark.slow
def test_backwards_needs_force(stacks):
    plan = plan_promotion(str(stacks["cloud"]), str(stacks["lab"]))
    assert any("promoting backwards needs --force" in p for p in plan.problems)
    before = stacks["lab"].read_bytes()
    assert main(["promote", str(stacks["cloud"]), str(stacks["lab"])]) == 1
    assert stacks["lab"].read_bytes() == before
    assert main(["promote", str(stacks["cloud"]), str(stacks["lab"]), "--force"]) == 0
    assert load_stack(str(stacks["lab"])).upstream("kserve").version == "v0.16.0"


def test_a_failing_or_stale_record_blocks_promotion(stacks, tmp_path):
    record = tmp_path / "lab-record.json"
    versions = yaml.safe_load(stacks["lab"].read_text())["config"]["mlplatform:versions"]
    write_versions(stacks["lab"], {**versions, "record": str(record)})

    plan = plan_promotion(str(stacks["lab"]), str(stacks["openshift"]))
    assert any("'missing'" in p for p in plan.problems), plan.problems

    assert main(["record", str(stacks["lab"]), "--result", "failed"]) == 0
    assert json.loads(record.read_text())["result"] == "failed"
    assert any("is 'failed'" in p for p in plan_promotion(str(stacks["lab"]), str(stacks["openshift"])).problems)

    assert main(["record", str(stacks["lab"]), "--result", "passed"]) == 0
    assert plan_promotion(str(stacks["lab"]), str(stacks["openshift"])).problems == []

    # The lab moves on after its run was recorded: the record no longer speaks for it.
    data = json.loads(record.read_text())
    data["versions"]["kserve"] = "v0.16.0"
    record.write_text(json.dumps(data))
    problems = plan_promotion(str(stacks["lab"]), str(stacks["openshift"])).problems
    assert any("ran other versions than its current pins" in p for p in problems)


def test_unknown_pins_are_config_errors(stacks):
    versions = yaml.safe_load(stacks["openshift"].read_text())["config"]["mlplatform:versions"]
    write_versions(stacks["openshift"], {**versions, "pins": {"kserve": "v9.9.9", "not-a-component": "1.0"}})
    with pytest.raises(ConfigError) as caught:
        load_stack(str(stacks["openshift"]))
    messages = [str(p) for p in caught.value.problems]
    assert any(
        "mlplatform:versions.pins.kserve: 'v9.9.9' is not a version of kserve in the lock (allowed: v0.16.0, v0.17.0)"
        in m
        for m in messages
    ), messages
    assert any(
        "mlplatform:versions.pins.not-a-component: 'not-a-component' is not an upstream component" in m
        for m in messages
    )


def planned(stacks):
    """lab -> openshift, planned without the gate (these tests are about the write)."""
    plan = plan_promotion(str(stacks["lab"]), str(stacks["openshift"]))
    assert plan.problems == [] and plan.changes
    return plan


def pin_lines(pins: dict[str, str], comments: dict[str, str] | None = None) -> str:
    comments = comments or {}
    return "".join(f"      {name}: {version}{comments.get(name, '')}\n" for name, version in pins.items())


@pytest.mark.security
@pytest.mark.parametrize("target", ["lab", "openshift", "cloud"])
def test_a_promotion_changes_nothing_outside_the_pins(stacks, tmp_path, target):
    """A byte-for-byte copy of a shipped stack gets its versions entry at the end of config and
    nothing else changes."""
    copy = tmp_path / "shipped" / f"Pulumi.{target}.yaml"
    copy.parent.mkdir()
    copy.write_bytes((REPO_ROOT / "stacks" / copy.name).read_bytes())
    plan = plan_promotion(str(stacks["openshift"]), str(copy), force=True)
    assert plan.problems == []
    assert apply_promotion(plan) is True
    pins = dict(sorted(load_stack(str(stacks["openshift"])).upstream_versions().items()))
    assert copy.read_text() == shipped(copy) + "  mlplatform:versions:\n    pins:\n" + pin_lines(pins)
    assert load_stack(str(copy)).upstream_versions() == pins
    assert strays(copy.parent) == []


@pytest.mark.security
@pytest.mark.parametrize(
    "after_pins", ["", "    record: {record}  # where runs are recorded\n    # end of the block\n"]
)
def test_comments_in_and_around_the_versions_block_survive(stacks, tmp_path, after_pins):
    lock = yaml.safe_load(stacks["openshift"].read_text())["config"]["mlplatform:versions"]["lock"]
    after_pins = after_pins.format(record=tmp_path / "openshift-record.json")
    head = (
        "  # Versions: the lab's pins arrive here by promotion.\n"
        "  mlplatform:versions:  # promoted from lab\n"
        "    # The lock this copy runs on.\n"
        f"    lock: {lock}  # a test lock\n"
        "    # Pins below are written by `mlplatform promote`.\n"
        "    pins:\n"
        "      # inside the pins\n"
    )
    tail = "    # after the pins\n" + after_pins + "  # after the versions block\n# end of file\n"
    target = stacks["openshift"]
    target.write_text(shipped(target) + head + "      kserve: v0.16.0  # was the lab's\n" + tail)

    assert apply_promotion(planned(stacks)) is True
    expected = head + pin_lines(lab_versions(stacks), {"kserve": "  # was the lab's"}) + tail
    assert target.read_text() == shipped(target) + expected
    assert load_stack(str(target)).upstream("kserve").version == NEXT_KSERVE


@pytest.mark.security
@pytest.mark.parametrize(
    "block",
    [
        "  mlplatform:versions: {{lock: {lock}, pins: {{kserve: v0.16.0}}}}\n",
        '  "mlplatform:versions":\n    lock: {lock}\n    pins:\n      kserve: v0.16.0\n',
        "  'mlplatform:versions': {{lock: {lock}}}\n",
    ],
    ids=["flow", "quoted-key", "quoted-key-flow"],
)
def test_flow_and_quoted_versions_entries_end_with_one_key(stacks, block):
    target = stacks["openshift"]
    lock = yaml.safe_load(target.read_text())["config"]["mlplatform:versions"]["lock"]
    target.write_text(shipped(target) + block.format(lock=lock))

    assert apply_promotion(planned(stacks)) is True
    after = target.read_text()
    assert after.startswith(shipped(target))
    assert after.count("mlplatform:versions") == 1, after
    # A reader that refuses duplicate keys reads it.
    config = YAML(typ="rt").load(after)["config"]
    assert dict(config["mlplatform:versions"]["pins"]) == lab_versions(stacks)
    assert load_stack(str(target)).upstream_versions() == lab_versions(stacks)


@pytest.mark.security
@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("config:\n  mlplatform:environment: lab\n  mlplatform:environment: cloud\n", "duplicate key"),
        ("config:\n  mlplatform:versions:\n    pins: {}\n    pins: {}\n", "duplicate key"),
        ("config: {}\nconfig: {}\n", "duplicate key"),
        ("config:\n  mlplatform:environment: &env lab\n  mlplatform:other: *env\n", "anchors or aliases"),
        ("config:\n  mlplatform:versions: &versions\n    lock: versions.lock.yaml\n", "anchors or aliases"),
        ("config:\n  mlplatform:cluster:\n    <<: {nodePools: []}\n", "merge key"),
        ("config:\n  mlplatform:environment: !!str lab\n", "YAML tag"),
        ("- config\n", "not a mapping"),
        ("encryptionsalt: x\n", "`config` is missing or not a mapping"),
        ("config: [mlplatform:environment]\n", "`config` is missing or not a mapping"),
        ("config:\n  mlplatform:versions: versions.lock.yaml\n", "`mlplatform:versions` is not a mapping"),
        ("config:\n  mlplatform:versions:\n    pins: [kserve]\n", "`mlplatform:versions.pins` is not a mapping"),
        ("config:\n  mlplatform:environment:   lab\n", "does not reproduce it byte for byte (from line 2"),
        ("config:\r\n  mlplatform:environment: lab\r\n", "does not reproduce it byte for byte"),
        ("config:\n  mlplatform:environment: [lab\n", "not valid YAML"),
        # The parser hangs `# about b` on `a`: removing `a` would take the comment with it.
        (
            "config:\n  mlplatform:versions:\n    pins:\n      a: v1\n      # about b\n      b: v1\n",
            "would move or change lines outside them",
        ),
    ],
)
def test_a_file_that_cannot_be_edited_safely_is_refused(tmp_path, text, why):
    path = tmp_path / "Pulumi.x.yaml"
    with pytest.raises(PromotionError) as caught:
        with_pins(path, text, {"b": "v2"})
    assert str(path) in str(caught.value)
    assert why in str(caught.value)


@pytest.mark.security
@pytest.mark.parametrize(
    "extra",
    ["  mlplatform:environment: openshift\n", "  mlplatform:other: &again x\n"],
    ids=["duplicate-key", "anchor"],
)
def test_an_unsafe_target_is_left_byte_identical(stacks, capsys, extra):
    target = stacks["openshift"]
    target.write_text(target.read_text() + extra)
    before = target.read_bytes()
    assert main(["promote", str(stacks["lab"]), str(target)]) == 2
    assert target.read_bytes() == before
    assert strays(target.parent) == []
    assert target.name in capsys.readouterr().err


class _HalfWriter:
    """A file whose write stops half way with a full disk."""

    def __init__(self, handle, seen: list[bytes], folder: Path):
        self.handle, self.seen, self.folder = handle, seen, folder

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.close()

    def write(self, data: bytes) -> None:
        self.handle.write(data[: len(data) // 2])
        self.handle.flush()
        self.seen.extend(p.read_bytes() for p in self.folder.iterdir() if p.name.endswith(".tmp"))
        raise OSError(errno.ENOSPC, "No space left on device")

    def __getattr__(self, name):
        return getattr(self.handle, name)


@pytest.mark.security
@pytest.mark.parametrize("where", ["write", "rename"])
def test_a_write_cut_short_leaves_the_original(stacks, monkeypatch, where):
    target = stacks["openshift"]
    before = target.read_bytes()
    plan = planned(stacks)
    seen: list[bytes] = []
    if where == "write":
        fdopen = os.fdopen
        monkeypatch.setattr(os, "fdopen", lambda fd, *a, **k: _HalfWriter(fdopen(fd, *a, **k), seen, target.parent))
    else:

        def fail(source, destination):
            seen.append(Path(source).read_bytes())
            raise OSError(errno.EIO, "Input/output error")

        monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(PromotionError, match="cannot write"):
        apply_promotion(plan)
    # The new text reached a temp file (half of it, where the write failed) and no further.
    new = plan.new_text.encode()
    assert seen == [new[: len(new) // 2] if where == "write" else new]
    assert target.read_bytes() == before
    assert strays(target.parent) == []


@pytest.mark.security
def test_a_second_writer_is_refused(stacks):
    target = stacks["openshift"]
    before = target.read_bytes()
    plan = planned(stacks)
    with write_lock(target):
        with pytest.raises(PromotionError, match=f"another mlplatform command is writing {target}"):
            apply_promotion(plan)
        assert target.read_bytes() == before
    assert apply_promotion(plan) is True
    assert strays(target.parent) == []


def test_the_write_lock_holds_across_processes_and_for_its_wait(tmp_path):
    target = tmp_path / "Pulumi.x.yaml"
    target.write_text("config: {}\n")
    holder = (
        "import sys\nfrom mlplatform.safe_write import write_lock\n"
        "with write_lock(sys.argv[1]):\n    print('held', flush=True)\n    sys.stdin.read()\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", holder, str(target)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO_ROOT,
    )
    try:
        assert child.stdout.readline().strip() == "held"
        started = time.monotonic()
        with (
            pytest.raises(FileLockedError, match=f"another mlplatform command is writing {target}"),
            write_lock(target, wait=0.3),
        ):
            pass
        assert time.monotonic() - started >= 0.3
    finally:
        child.stdin.close()
        assert child.wait(timeout=60) == 0
    # Released: the lock file went with it, and one left behind by a killed writer holds nothing.
    assert strays(tmp_path) == []
    safe_write.lock_path(target).write_text("")
    with write_lock(target):
        pass
    assert strays(tmp_path) == []


@pytest.mark.security
@pytest.mark.parametrize("fault", ["cut-short", "unreadable"])
def test_a_write_that_does_not_read_back_is_undone(stacks, monkeypatch, fault):
    target = stacks["openshift"]
    before = target.read_bytes()
    plan = planned(stacks)
    on_disk: list[bytes] = []
    if fault == "cut-short":
        # The last pin's line lost: still valid YAML, still a valid stack, not what was planned.
        write = mlplatform.promote.atomic_write

        def cut_short(path, data):
            cut = data[: data.rindex(b"\n", 0, len(data) - 1) + 1] if not on_disk else data
            write(path, cut)
            on_disk.append(Path(path).read_bytes())

        monkeypatch.setattr(mlplatform.promote, "atomic_write", cut_short)
    else:

        def unreadable(path):
            on_disk.append(Path(path).read_bytes())
            raise ConfigError([])

        monkeypatch.setattr(mlplatform.promote, "read_stack_file", unreadable)
    with pytest.raises(PromotionError, match="its original content is restored"):
        apply_promotion(plan)
    assert on_disk[0] != before  # it was written ...
    assert target.read_bytes() == before  # ... and put back
    assert strays(target.parent) == []


@pytest.mark.security
def test_a_target_changed_since_the_plan_is_left_as_it_is(stacks):
    target = stacks["openshift"]
    plan = planned(stacks)
    with target.open("a") as handle:
        handle.write("  # edited meanwhile\n")
    changed = target.read_bytes()
    with pytest.raises(PromotionError, match="changed since the promotion was planned"):
        apply_promotion(plan)
    assert target.read_bytes() == changed


@pytest.mark.security
def test_a_record_is_written_whole_or_not_at_all(stacks, tmp_path, monkeypatch, capsys):
    record = tmp_path / "lab-record.json"
    assert write_record(str(stacks["lab"]), "passed", record) == record
    before = record.read_bytes()
    assert json.loads(before)["result"] == "passed"

    def fail(source, destination):
        raise OSError(errno.EIO, "Input/output error")

    with monkeypatch.context() as patched:
        patched.setattr(os, "replace", fail)
        with pytest.raises(OSError):
            write_record(str(stacks["lab"]), "failed", record)
    assert record.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".lab-record")) == []

    monkeypatch.setattr(mlplatform.promote, "RECORD_LOCK_WAIT", 0.1)
    with write_lock(record):
        assert main(["record", str(stacks["lab"]), "--result", "failed", "--out", str(record)]) == 2
    assert "another mlplatform command is writing" in capsys.readouterr().err
    assert record.read_bytes() == before


def test_atomic_write_keeps_the_mode_follows_links_and_syncs(tmp_path, monkeypatch):
    synced: list[int] = []
    fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), fsync(fd)))
    existing = tmp_path / "Pulumi.x.yaml"
    existing.write_text("a\n")
    existing.chmod(0o640)
    atomic_write(existing, "b\n")
    assert existing.read_text() == "b\n"
    assert stat.S_IMODE(existing.stat().st_mode) == 0o640
    assert len(synced) == 2  # the file, then its folder

    link = tmp_path / "Pulumi.link.yaml"
    link.symlink_to(existing.name)
    atomic_write(link, "c\n")
    assert link.is_symlink() and existing.read_text() == "c\n"

    fresh = tmp_path / "Pulumi.new.yaml"
    atomic_write(fresh, b"d\n")
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o666 & ~umask
    assert strays(tmp_path) == []


@pytest.mark.parametrize(
    "last",
    ["  mlplatform:environment: lab\n", "  mlplatform:teams:\n    - name: a\n      groups: [a, b]\n"],
    ids=["scalar", "sequence"],
)
def test_with_pins_adds_the_versions_entry_where_none_is(tmp_path, last):
    """At the end of config, above the lines that close the file."""
    closing = "\n  # trailing comment\n# end\n"
    text = f"# comment\nconfig:\n{last}{closing}"
    added = with_pins(tmp_path / "Pulumi.x.yaml", text, {"kueue": "v0.19.2", "olm-api": "3048ccd"})
    block = "  mlplatform:versions:\n    pins:\n      kueue: v0.19.2\n      olm-api: 3048ccd\n"
    assert added == f"# comment\nconfig:\n{last}{block}{closing}"
    assert with_pins(tmp_path / "Pulumi.x.yaml", added, {"kueue": "v0.19.2", "olm-api": "3048ccd"}) == added


def test_pins_are_updated_in_place(tmp_path):
    """Unchanged pins keep their quoting and comments; new ones go in sorted order; pins the
    source does not have go, their comment lines staying."""
    text = (
        "config:\n  mlplatform:versions:\n    pins:\n"
        "      a: 'v1'  # keep me\n      c: \"v1\"\n      # below c\n      d: v1\n      # below d\n"
    )
    edited = with_pins(tmp_path / "Pulumi.x.yaml", text, {"a": "v1", "b": "1.10", "c": "v2"})
    assert edited == (
        "config:\n  mlplatform:versions:\n    pins:\n"
        "      a: 'v1'  # keep me\n      b: '1.10'\n      c: \"v2\"\n      # below c\n      # below d\n"
    )
    assert yaml.safe_load(edited)["config"]["mlplatform:versions"]["pins"] == {"a": "v1", "b": "1.10", "c": "v2"}
