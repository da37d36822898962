"""Overlay builds kept on disk: a new process reuses a build only while nothing it read changed."""

from __future__ import annotations

import datetime
import json
import os
import shutil

import pytest

from mlplatform import overlays
from mlplatform.upstream import upstream_sources

# Katib in the lab: the environment has no variant, so the build is katib/base's.
COMPONENT, ENVIRONMENT = "katib", "lab"
OVERLAY = "katib/base"


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A cache of its own, and no build left from earlier tests in this process."""
    folder = tmp_path / "overlay-cache"
    monkeypatch.setenv("MLPLATFORM_OVERLAY_CACHE", str(folder))
    monkeypatch.setattr(overlays, "_BUILDS", {})
    return folder


@pytest.fixture
def counted_builds(monkeypatch):
    """Counts the kustomize builds that really run."""
    calls: list[str] = []
    real = overlays._build

    def counting(overlay, sources, mirror):
        calls.append(overlay)
        return real(overlay, sources, mirror)

    monkeypatch.setattr(overlays, "_build", counting)
    return calls


def new_process(monkeypatch) -> None:
    """What a new process starts with: nothing built in memory."""
    monkeypatch.setattr(overlays, "_BUILDS", {})


def test_a_new_process_reads_the_build_from_disk(cache, counted_builds, mirror, monkeypatch):
    sources = upstream_sources()
    first = overlays.build_overlay(COMPONENT, ENVIRONMENT, sources, mirror)
    new_process(monkeypatch)
    second = overlays.build_overlay(COMPONENT, ENVIRONMENT, sources, mirror)
    assert counted_builds == [OVERLAY]
    assert second == first
    assert any(d["kind"] == "Deployment" and d["metadata"]["name"] == "katib-controller" for d in second)
    entries = list(cache.glob("*.json"))
    assert [e.stem for e in entries] == [overlays.build_digest(OVERLAY, sources, mirror)]
    assert json.loads(entries[0].read_text()) == first


def test_environments_without_a_variant_share_one_build(cache, counted_builds, mirror):
    sources = upstream_sources()
    builds = [overlays.build_overlay("kserve", environment, sources, mirror) for environment in overlays.ENVIRONMENTS]
    assert counted_builds == ["kserve/base"]
    assert builds[0] == builds[1] == builds[2]
    assert len(list(cache.glob("*.json"))) == 1


def test_an_edited_overlay_is_built_again(cache, counted_builds, mirror, monkeypatch, tmp_path):
    tree = tmp_path / "overlays"
    # The overlays' own files: not bases an earlier `mlplatform overlays prepare` laid down.
    shutil.copytree(overlays.OVERLAYS_DIR, tree, ignore=shutil.ignore_patterns("upstream", ".upstream-*"))
    monkeypatch.setattr(overlays, "OVERLAYS_DIR", tree)
    sources = upstream_sources()
    before = overlays.build_overlay(COMPONENT, ENVIRONMENT, sources, mirror)
    kustomization = tree / OVERLAY / "kustomization.yaml"
    kustomization.write_text(kustomization.read_text() + "commonAnnotations:\n  example.com/edited: 'yes'\n")
    new_process(monkeypatch)
    after = overlays.build_overlay(COMPONENT, ENVIRONMENT, sources, mirror)
    assert counted_builds == [OVERLAY, OVERLAY]
    assert all("example.com/edited" not in (d["metadata"].get("annotations") or {}) for d in before)
    assert all(d["metadata"]["annotations"]["example.com/edited"] == "yes" for d in after)
    assert len(list(cache.glob("*.json"))) == 2


def test_a_refreshed_mirror_file_changes_the_key_an_unrelated_one_does_not(mirror, tmp_path):
    copy = tmp_path / "mirror"
    shutil.copytree(mirror, copy)
    sources = upstream_sources()
    before = overlays.build_digest(OVERLAY, sources, copy)
    katib_folder = copy / sources["katib"].get("mirror")
    unrelated = next(p for p in (copy / sources["nvidia-device-plugin"].get("mirror")).rglob("*") if p.is_file())
    unrelated.write_text(unrelated.read_text() + "\n# refreshed\n")
    assert overlays.build_digest(OVERLAY, sources, copy) == before
    refreshed = next(p for p in sorted(katib_folder.rglob("*.yaml")))
    refreshed.write_text(refreshed.read_text() + "\n# refreshed\n")
    assert overlays.build_digest(OVERLAY, sources, copy) != before


def test_another_pin_changes_the_key(mirror):
    sources = upstream_sources()
    katib = sources["katib"]
    repinned = {**sources, "katib": type(katib)(katib.name, katib.kind, "v0.0.0", {**katib.raw, "version": "v0.0.0"})}
    assert overlays.build_digest(OVERLAY, repinned, mirror) != overlays.build_digest(OVERLAY, sources, mirror)


def test_a_damaged_entry_is_built_again(cache, counted_builds, mirror, monkeypatch):
    sources = upstream_sources()
    first = overlays.build_overlay(COMPONENT, ENVIRONMENT, sources, mirror)
    entry = cache / f"{overlays.build_digest(OVERLAY, sources, mirror)}.json"
    entry.write_text(entry.read_text()[:100])  # cut short, as by a killed writer
    new_process(monkeypatch)
    assert overlays.build_overlay(COMPONENT, ENVIRONMENT, sources, mirror) == first
    assert counted_builds == [OVERLAY, OVERLAY]
    assert json.loads(entry.read_text()) == first


def test_off_builds_in_every_process(counted_builds, mirror, monkeypatch, tmp_path):
    monkeypatch.setenv("MLPLATFORM_OVERLAY_CACHE", "off")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    for _ in range(2):
        new_process(monkeypatch)
        overlays.build_overlay(COMPONENT, ENVIRONMENT, upstream_sources(), mirror)
    assert counted_builds == [OVERLAY, OVERLAY]
    assert not list(tmp_path.rglob("*.json"))


def test_a_build_json_cannot_hold_is_not_kept(cache, mirror, monkeypatch):
    dated = [{"kind": "ConfigMap", "data": {"since": datetime.date(2026, 1, 1)}}]
    monkeypatch.setattr(overlays, "_build", lambda overlay, sources, mirror: dated)
    assert overlays.build_overlay(COMPONENT, ENVIRONMENT, upstream_sources(), mirror) == dated
    assert not cache.exists() or not list(cache.glob("*.json"))


def test_old_entries_are_pruned(cache, monkeypatch):
    monkeypatch.setattr(overlays, "_CACHE_ENTRIES_KEPT", 3)
    cache.mkdir()
    for index in range(5):
        entry = cache / f"{index}.json"
        entry.write_text("[]")
        stamp = 1_700_000_000 + index
        os.utime(entry, (stamp, stamp))
    overlays._prune(cache)
    assert sorted(p.stem for p in cache.glob("*.json")) == ["2", "3", "4"]
