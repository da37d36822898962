"""The lock file and the wrapper modules the tools are built through."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from mlplatform.lock import load_lock
from mlplatform.toolchain.build import GROUPS, ToolBuildError, select_tools, upstream_replaces
from tests.conftest import REPO_ROOT

KUBERNETES_GOMOD = """module k8s.io/kubernetes

go 1.25.0

require (
\tk8s.io/api v0.0.0
\tk8s.io/apiserver v0.0.0
)

replace (
\tk8s.io/api => ./staging/src/k8s.io/api
\tk8s.io/apiserver => ./staging/src/k8s.io/apiserver // keep
)
"""

ETCD_GOMOD = """module go.etcd.io/etcd/server/v3

require go.etcd.io/etcd/api/v3 v3.6.16

replace (
\tgo.etcd.io/etcd/api/v3 => ../api
\tgo.etcd.io/etcd/pkg/v3 => ../pkg
)

// Bad imports are sometimes causing attempts to pull that code.
replace go.etcd.io/etcd => ./FORBIDDEN_DEPENDENCY
replace github.com/example/fork v1.2.0 => github.com/example/fork v1.2.1
"""


def test_local_replaces_map_to_the_published_staging_version():
    assert upstream_replaces(KUBERNETES_GOMOD, "v0.35.4") == [
        "k8s.io/api => k8s.io/api v0.35.4",
        "k8s.io/apiserver => k8s.io/apiserver v0.35.4",
    ]


def test_local_replaces_are_dropped_when_requirements_carry_real_versions():
    # etcd requires its siblings at real versions; only the remote replace is kept.
    assert upstream_replaces(ETCD_GOMOD, None) == [
        "github.com/example/fork v1.2.0 => github.com/example/fork v1.2.1",
    ]


def test_unparseable_replace_is_an_error():
    with pytest.raises(ToolBuildError, match="cannot parse replace directive"):
        upstream_replaces("replace what is this\n", None)


def test_python_pins_equal_the_lock_and_the_provider_plugin_version():
    lock = load_lock()
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    pins = dict(dep.split("==") for dep in project["dependencies"])
    assert pins["pulumi"] == lock.python["pulumi"]
    assert pins["pulumi-kubernetes"] == lock.python["pulumi-kubernetes"]
    # One Pulumi release: the CLI, its language host (which runs the SDK's own exec shim), the SDK.
    assert lock.tools["pulumi"].version == lock.tools["pulumi-language-python"].version == f"v{lock.python['pulumi']}"
    assert lock.tools["pulumi-resource-kubernetes"].reported_version == f"v{lock.python['pulumi-kubernetes']}"


def test_kubernetes_tools_share_one_minor_at_least_1_33():
    lock = load_lock()
    kubernetes = lock.tools["kubernetes"]
    major, minor, _ = kubernetes.version.lstrip("v").split(".")
    assert (int(major), int(minor)) >= (1, 33)
    assert kubernetes.local_replace_version == f"v0.{minor}.{kubernetes.version.split('.')[2]}"
    assert {"kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl"} <= set(kubernetes.binaries)
    assert kubernetes.rendered_ldflags()["k8s.io/component-base/version.gitVersion"] == kubernetes.version


def test_etcd_is_at_least_3_5():
    major, minor, _ = load_lock().tools["etcd"].version.lstrip("v").split(".")
    assert (int(major), int(minor)) >= (3, 5)


def test_groups_cover_every_tool_and_selection_rejects_unknown_names():
    lock = load_lock()
    assert {name for group in GROUPS.values() for name in group} == set(lock.tools)
    assert [t.name for t in select_tools(lock, ["cluster", "helm"])] == [
        "kubernetes",
        "etcd",
        "kwok",
        "cyclonus",
        "helm",
    ]
    with pytest.raises(ToolBuildError, match="unknown tool or group 'terraform'"):
        select_tools(lock, ["terraform"])


def test_cache_key_changes_with_the_pinned_version():
    from dataclasses import replace

    tool = load_lock().tools["helm"]
    assert tool.cache_key != replace(tool, version="v3.0.0").cache_key
    assert tool.cache_key == load_lock().tools["helm"].cache_key
    # Which installed versions are accepted does not shape the binary; where the source comes from does.
    assert tool.cache_key == replace(tool, supported={}).cache_key
    assert tool.cache_key != replace(tool, mirror_source="helm").cache_key


def test_links_are_swapped_in_place_and_left_alone_when_current(tmp_path, monkeypatch):
    """A relink (every `make` target that needs tools runs `mlplatform tools`) must not leave a
    moment without the link while a plane or a test run uses it: the new link is renamed over
    the old one, and a link that already points right is not touched."""
    from mlplatform.toolchain import build

    monkeypatch.setattr(build, "BIN_DIR", tmp_path / "bin")
    old, new = tmp_path / "old" / "kubectl", tmp_path / "new" / "kubectl"
    for binary in (old, new):
        binary.parent.mkdir()
        binary.write_text("#!/bin/sh\n")
    build._link({"kubectl": old})
    link = tmp_path / "bin" / "kubectl"
    first = link.lstat().st_ino
    build._link({"kubectl": old})
    assert link.lstat().st_ino == first
    removed = []
    monkeypatch.setattr(build.Path, "unlink", lambda self, *a, **k: removed.append(self))
    build._link({"kubectl": new})
    assert link.resolve() == new and link.lstat().st_ino != first
    assert removed == [], "the link in use was removed before the new one was in place"
    assert sorted(p.name for p in (tmp_path / "bin").iterdir()) == ["kubectl"]


HOST_GOMOD = """module github.com/pulumi/pulumi/sdk/python/cmd/pulumi-language-python/v3

replace (
\tgithub.com/atotto/clipboard => github.com/tgummerer/clipboard v0.0.0-20241001131231-d02d263e614e
\tgithub.com/pulumi/pulumi/pkg/v3 => ../../../../pkg
\tgithub.com/pulumi/pulumi/sdk/v3 => ../../..
)

require github.com/pulumi/pulumi/sdk/v3 v3.258.0
"""


@pytest.fixture
def host(tmp_path, monkeypatch):
    """The lock's language host, an empty tool cache and PATH, a proxy that refuses the module."""
    from mlplatform.toolchain import build

    monkeypatch.setenv("MLPLATFORM_TOOL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.delenv("MLPLATFORM_MIRROR", raising=False)
    monkeypatch.setattr(build, "BIN_DIR", tmp_path / "bin")

    def refused(module, version, cwd, env):
        raise ToolBuildError(f"go mod download {module}@{version}: reading {module}/@v/{version}.info: 403 Forbidden")

    monkeypatch.setattr(build, "_module_download", refused)
    return load_lock().tools["pulumi-language-python"]


def test_a_module_the_proxy_refuses_is_built_from_a_copy_of_the_mirror_source(host, tmp_path, monkeypatch):
    from mlplatform.toolchain import build

    source = tmp_path / "mirror" / "pulumi-language-python"
    source.mkdir(parents=True)
    (source / "go.mod").write_text(HOST_GOMOD)
    (source / "main.go").write_text("package main\n")
    for path in (source / "go.mod", source / "main.go", source):
        path.chmod(0o555 if path.is_dir() else 0o444)  # a mirror is read-only
    monkeypatch.setenv("MLPLATFORM_MIRROR", str(tmp_path / "mirror"))
    seen = {}

    def run(cmd, cwd, env):
        if cmd[:3] == ["go", "mod", "tidy"]:
            seen["wrapper"] = (cwd / "go.mod").read_text()
            seen["copy"] = (cwd / "module" / "go.mod").read_text()
            (cwd / "module" / "main.go").write_text("package main\n")  # the copy is writable
        else:
            seen["build"] = cmd
            Path(cmd[cmd.index("-o") + 1]).write_text("binary")
        return ""

    monkeypatch.setattr(build, "_run", run)
    monkeypatch.setattr(build, "_fetch_companions", lambda tool, target, env: {})
    monkeypatch.setattr(build, "_go_directive", lambda: "1.25")
    binaries = build.build_tool(host)
    assert binaries == {"pulumi-language-python": build.cached_dir(host) / "bin" / "pulumi-language-python"}
    assert seen["copy"] == HOST_GOMOD
    wrapper = seen["wrapper"]
    for line in (
        "require github.com/pulumi/pulumi/sdk/python/cmd/pulumi-language-python/v3 v3.259.0",
        "\tgithub.com/pulumi/pulumi/pkg/v3 => github.com/pulumi/pulumi/pkg/v3 v3.259.0",
        "\tgithub.com/pulumi/pulumi/sdk/v3 => github.com/pulumi/pulumi/sdk/v3 v3.259.0",
        "\tgithub.com/pulumi/pulumi/sdk/python/cmd/pulumi-language-python/v3 => ./module",
        "\tgithub.com/atotto/clipboard => github.com/tgummerer/clipboard v0.0.0-20241001131231-d02d263e614e",
    ):
        assert line in wrapper.splitlines()
    assert "../" not in wrapper
    assert "-X 'github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=v3.259.0'" in seen["build"][4]
    assert (source / "main.go").read_text() == "package main\n" and not (build.cached_dir(host) / "src").exists()


@pytest.mark.parametrize("mirror", [None, "empty"])
def test_without_mirror_or_module_the_error_says_how_to_get_the_official_cli(host, tmp_path, monkeypatch, mirror):
    from mlplatform.toolchain import build

    if mirror:
        (tmp_path / mirror).mkdir()
        monkeypatch.setenv("MLPLATFORM_MIRROR", str(tmp_path / mirror))
    result = build.ensure_tool(host)
    assert result.source == "unavailable"
    first, official, mirror_hint = result.detail.splitlines()
    assert "403 Forbidden" in first
    where = (
        f"{tmp_path / mirror / 'pulumi-language-python'} has no go.mod" if mirror else "MLPLATFORM_MIRROR is not set"
    )
    assert f"no mirror holds it ({where})" in first
    assert "official Pulumi CLI, which bundles pulumi-language-python" in official
    assert "`curl -fsSL https://get.pulumi.com | sh -s -- --version 3.259.0`" in official
    assert "(or another release in >=3.259.0,<4)" in official and "~/.pulumi/bin on PATH" in official
    assert mirror_hint.startswith("or set MLPLATFORM_MIRROR to a mirror folder holding pulumi-language-python/")
    assert "github.com/pulumi/pulumi/sdk/python/cmd/pulumi-language-python/v3 at v3.259.0" in mirror_hint


def test_tools_reports_the_missing_host_and_fails(host, monkeypatch, capsys):
    from mlplatform.cli import main

    assert main(["tools", "--only", "pulumi-language-python"]) == 1
    out, err = capsys.readouterr()
    assert "pulumi-language-python: not available at v3.259.0" in out
    assert "pulumi-language-python v3.259.0 could not be built:" in err
    assert "\n  Either install the official Pulumi CLI" in err and "\n  or set MLPLATFORM_MIRROR" in err
