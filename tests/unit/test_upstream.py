"""The lock's upstream sources and the offline mirror that satisfies them."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from mlplatform.upstream import UpstreamError, check_mirror, load_documents, upstream_sources
from tests.conftest import REPO_ROOT


def test_the_shared_mirror_satisfies_every_pinned_source(mirror):
    problems = [e for e in check_mirror(mirror) if e.problem]
    assert problems == []


def test_a_mirror_missing_a_source_is_reported(mirror, tmp_path):
    partial = tmp_path / "mirror"
    shutil.copytree(mirror / "nvidia-device-plugin", partial / "nvidia-device-plugin")
    entries = {(e.source, e.key): e.problem for e in check_mirror(partial)}
    assert entries[("nvidia-device-plugin", "device-plugin")] is None
    assert entries[("kueue", "default")] == "missing"
    assert entries[("gpu-operator", "crds")] == "missing"


def test_cli_mirror_check_exit_codes(mirror, tmp_path):
    ok = subprocess.run(
        [sys.executable, "-m", "mlplatform", "mirror", "check", "--mirror", str(mirror)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0, ok.stdout
    total = len([e for e in check_mirror(mirror)])
    assert ok.stdout.strip().endswith(f"{total} of {total} pinned sources satisfied by {mirror}")
    empty = subprocess.run(
        [sys.executable, "-m", "mlplatform", "mirror", "check", "--mirror", str(tmp_path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    assert empty.returncode == 1
    assert f"0 of {total} pinned sources satisfied" in empty.stdout


def test_missing_mirror_file_names_source_and_path(tmp_path):
    source = upstream_sources()["nvidia-device-plugin"]
    with pytest.raises(
        UpstreamError,
        match=r"nvidia-device-plugin v0.20.0: deployments/static/nvidia-device-plugin.yml is not in the mirror",
    ):
        load_documents(source, "device-plugin", tmp_path)


def test_every_upstream_source_names_how_to_fetch_it_online():
    for name, source in upstream_sources().items():
        assert source.version, name
        if source.kind == "go-module":
            # Fetched through the Go module proxy, online and offline alike.
            assert source.get("module"), name
            continue
        if source.kind != "image":
            assert (source.get("source") or "").startswith("https://"), name
            assert source.get("mirror"), name
            assert source.files, name
