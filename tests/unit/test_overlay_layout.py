"""The overlays, app first: `overlays/<component>/base` and a variant only where an environment
differs; after `mlplatform overlays prepare` each builds with a plain `kustomize build`, to the
objects the program installs."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mlplatform import overlays
from mlplatform.upstream import ManifestLoader, UpstreamError, upstream_sources

# What may sit in overlays/ beside the apps.
NOT_APPS = {overlays.COMPONENTS_DIR, overlays.UPSTREAM, "README.md"}


def kustomization(folder: Path) -> dict:
    return yaml.safe_load((folder / "kustomization.yaml").read_text()) or {}


def test_each_app_holds_a_base_and_variants_named_by_environment():
    apps = overlays.components()
    assert {"notebooks", "pipelines", "katib", "kserve", "trainer", "trainer-runtimes"} <= set(apps)
    for entry in overlays.OVERLAYS_DIR.iterdir():
        if entry.name in NOT_APPS or entry.name.startswith(f".{overlays.UPSTREAM}"):
            continue
        assert entry.name in apps, f"overlays/{entry.name}: neither an app (no base/) nor a shared folder"
        unknown = {p.name for p in entry.iterdir()} - {overlays.BASE, *overlays.ENVIRONMENTS}
        assert not unknown, f"overlays/{entry.name}: {sorted(unknown)} is neither base nor an environment"
    for folder in (overlays.OVERLAYS_DIR / overlays.COMPONENTS_DIR).iterdir():
        assert kustomization(folder)["kind"] == "Component", folder


def test_no_variant_only_points_at_its_base():
    """An environment that gets the base has no folder: the builder falls back to base."""
    variants = [name for name in overlays.overlay_names() if not name.endswith(f"/{overlays.BASE}")]
    assert variants, "no environment variant at all"
    for name in variants:
        document = {
            k: v for k, v in kustomization(overlays.OVERLAYS_DIR / name).items() if k not in ("apiVersion", "kind")
        }
        assert document != {"resources": ["../base"]}, f"overlays/{name} only points at its base: remove it"


def test_an_environment_without_a_variant_gets_the_base():
    assert overlays.overlay_for("kserve", "openshift") == "kserve/base"
    assert overlays.overlay_for("katib", "lab") == "katib/base"
    assert overlays.overlay_for("katib", "cloud") == "katib/cloud"


def copy_overlays(target: Path) -> Path:
    """The overlays' own files, as a checkout holds them before the command runs."""
    for path in overlays._overlay_files(overlays.OVERLAYS_DIR):
        copy = target / path.relative_to(overlays.OVERLAYS_DIR)
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, copy)
    return target


def documents(text: str) -> list[dict]:
    return [d for d in yaml.load_all(text, Loader=ManifestLoader) if d]


@pytest.mark.slow
def test_prepared_overlays_build_with_plain_kustomize_as_the_program_builds_them(mirror, tmp_path):
    root = copy_overlays(tmp_path / "overlays")
    # The documented command, as a user runs it.
    prepare = subprocess.run(
        [sys.executable, "-m", "mlplatform.cli", "overlays", "prepare", "--mirror", str(mirror), "--dir", str(root)],
        capture_output=True,
        text=True,
    )
    assert prepare.returncode == 0, prepare.stderr
    assert "upstream base(s) of stack lab" in prepare.stdout
    laid = root / overlays.UPSTREAM
    for file in laid.glob("*/*/kustomization.yaml"):
        assert all(not str(r).startswith("/") for r in kustomization(file.parent)["resources"]), file
    sources = upstream_sources()
    built: dict[str, list[dict]] = {}
    for name in overlays.overlay_names(root):
        proc = subprocess.run([overlays.kustomize_binary(), "build", str(root / name)], capture_output=True, text=True)
        assert proc.returncode == 0, f"kustomize build overlays/{name}: {proc.stderr}"
        built[name] = documents(proc.stdout)
    for component in overlays.components(root):
        for environment in overlays.ENVIRONMENTS:
            overlay = overlays.overlay_for(component, environment, root)
            expected = overlays.build_overlay(component, environment, sources, mirror)
            assert built[overlay] == expected, f"{component} ({environment}): kustomize build overlays/{overlay}"
    for name, objects in built.items():
        if not name.endswith(f"/{overlays.BASE}"):
            base = built[f"{name.split('/')[0]}/{overlays.BASE}"]
            assert objects != base, f"overlays/{name} builds what its base builds: remove it"


def test_online_the_bases_are_remote_at_the_locked_ref(tmp_path, monkeypatch):
    monkeypatch.setattr(overlays, "read_text", lambda source, key, mirror: f"# {source.name} {key}\n")
    root = copy_overlays(tmp_path / "overlays")
    sources = upstream_sources()
    laid = dict.fromkeys(overlays.lay_down(sources, None, root))
    assert ("katib", "standalone") in laid and ("jobset", "default") in laid
    upstream = root / overlays.UPSTREAM
    katib = sources["katib"]
    assert kustomization(upstream / "katib" / "standalone")["resources"] == [
        f"{katib.get('source')}/{katib.files['standalone']}?ref={katib.get('ref')}"
    ]
    # Online, Kubeflow Pipelines' tree is kustomize's to fetch: no copy of it.
    assert kustomization(upstream / "kubeflow-pipelines" / "platform-agnostic")["resources"][0].startswith("https://")
    assert not (upstream / "_trees").exists()
    controller = upstream / "kserve" / "controller"
    assert kustomization(controller)["resources"] == ["kserve.yaml"]
    assert (controller / "kserve.yaml").read_text() == "# kserve controller\n"
    jobset = (
        upstream / "jobset" / "default" / kustomization(upstream / "jobset" / "default")["resources"][0]
    ).resolve()
    assert (jobset / "kustomization.yaml").exists() and "jobset@v0.11.0" in str(jobset)


def test_a_failed_prepare_leaves_the_tree_an_earlier_one_laid_down(mirror, tmp_path, monkeypatch):
    root = copy_overlays(tmp_path / "overlays")
    sources = upstream_sources()
    overlays.lay_down(sources, mirror, root)
    before = sorted(p.relative_to(root) for p in (root / overlays.UPSTREAM).rglob("kustomization.yaml"))

    def refused(source):
        raise UpstreamError(f"{source.name}: the module proxy refused it")

    monkeypatch.setattr(overlays, "go_module_dir", refused)
    with pytest.raises(UpstreamError, match="refused"):
        overlays.lay_down(sources, mirror, root)
    assert sorted(p.relative_to(root) for p in (root / overlays.UPSTREAM).rglob("kustomization.yaml")) == before
    assert sorted(p.name for p in root.iterdir() if p.name.startswith(".")) == []


def test_prepare_refuses_a_folder_without_overlays(tmp_path, capsys):
    from mlplatform.cli import EXIT_INVALID, main

    assert main(["overlays", "prepare", "--online", "--dir", str(tmp_path)]) == EXIT_INVALID
    assert "holds no overlays" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_a_base_no_lock_entry_serves_is_named(mirror, tmp_path):
    root = copy_overlays(tmp_path / "overlays")
    extra = root / "notebooks" / "cloud"
    extra.mkdir()
    (extra / "kustomization.yaml").write_text("resources:\n  - ../../upstream/jupyterhub/default\n")
    with pytest.raises(overlays.OverlayError, match="upstream/jupyterhub, which is not in the lock"):
        overlays.lay_down(upstream_sources(), mirror, root)
