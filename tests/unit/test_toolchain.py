"""The lock file and the wrapper modules the tools are built through."""

from __future__ import annotations

import tomllib

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
    # The CLI may be newer than the SDK (it speaks to older SDKs), never older.
    cli = tuple(int(x) for x in lock.tools["pulumi"].version.lstrip("v").split("."))
    sdk = tuple(int(x) for x in lock.python["pulumi"].split("."))
    assert cli >= sdk
    # The language host runs the SDK's own exec shim: same version.
    assert lock.tools["pulumi-language-python"].version == f"v{lock.python['pulumi']}"
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
