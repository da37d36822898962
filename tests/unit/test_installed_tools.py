"""Installed tools inside the lock's supported range are used as they are; the rest are built.

Every installed tool here is a fake: a script in a temporary PATH that prints a version.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet

from mlplatform.lock import Companion, LockError, Tool, load_lock
from mlplatform.toolchain import build


@pytest.fixture
def env(tmp_path, monkeypatch):
    """A PATH holding only the fakes, an empty tool cache, and builds that write a stub binary."""
    installed = tmp_path / "installed"
    installed.mkdir()
    monkeypatch.setenv("PATH", str(installed))
    monkeypatch.setenv("MLPLATFORM_TOOL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(build, "BIN_DIR", tmp_path / "bin")
    monkeypatch.setattr(build, "SHARE_DIR", tmp_path / "share")
    built: list[str] = []

    def fake_build(tool: Tool) -> dict[str, Path]:
        built.append(tool.name)
        folder = build.cached_dir(tool) / "bin"
        folder.mkdir(parents=True, exist_ok=True)
        out = {}
        for name in [*tool.binaries, *(c.name for c in tool.companions)]:
            (folder / name).write_text("#!/bin/sh\necho built\n")
            out[name] = folder / name
        return out

    monkeypatch.setattr(build, "build_tool", fake_build)

    def install(name: str, output: str, rc: int = 0) -> Path:
        script = installed / name
        script.write_text(f"#!/bin/sh\nprintf '%s\\n' '{output}'\nexit {rc}\n")
        script.chmod(0o755)
        return script

    return argparse.Namespace(install=install, built=built, bin=tmp_path / "bin")


def helm(supported: str = ">=3.22.0,<4") -> Tool:
    return Tool(
        name="helm",
        module="helm.sh/helm/v3",
        version="v3.22.0",
        binaries={"helm": "helm.sh/helm/v3/cmd/helm"},
        supported={"helm": SpecifierSet(supported, prereleases=False)},
    )


def test_an_installed_tool_in_range_is_used_as_it_is(env):
    script = env.install("helm", "v3.23.1")
    result = build.ensure_tool(helm())
    assert (result.source, result.version) == ("path", "3.23.1")
    assert env.built == []
    assert (env.bin / "helm").resolve() == script
    assert result.used() == f"helm found on PATH at 3.23.1 ({script})"


@pytest.mark.parametrize("version", ["v3.21.3", "v4.0.0", "v3.24.0-rc.1"])
def test_an_installed_tool_out_of_range_is_built(env, version):
    script = env.install("helm", version)
    result = build.ensure_tool(helm())
    assert (result.source, result.version) == ("built", "v3.22.0")
    assert env.built == ["helm"]
    assert (env.bin / "helm").resolve() != script
    assert result.used() == "built from source at v3.22.0"
    assert result.notes == [f"helm {version.lstrip('v')} on PATH ({script}) is outside >=3.22.0,<4"]
    assert result.warnings == []


def test_a_missing_tool_is_built(env):
    result = build.ensure_tool(helm())
    assert result.source == "built" and env.built == ["helm"]
    assert result.notes == [] and result.warnings == []


@pytest.mark.parametrize(("output", "rc"), [("helm, a development build", 0), ("v3.23.0", 2)])
def test_an_unreadable_version_is_built_with_a_warning(env, output, rc):
    script = env.install("helm", output, rc)
    result = build.ensure_tool(helm())
    assert result.source == "built" and env.built == ["helm"]
    assert result.warnings == [
        f"{script}: `helm version --template {{{{.Version}}}}` names no version; building helm from source instead"
    ]


def test_a_tool_without_a_range_is_used_only_at_its_pin(env):
    etcd = Tool(name="etcd", module="go.etcd.io/etcd/server/v3", version="v3.6.16", binaries={"etcd": "x"})
    env.install("etcd", "etcd Version: 3.6.17\nGo Version: go1.26.8")
    assert build.ensure_tool(etcd).source == "built"
    env.install("etcd", "etcd Version: 3.6.16\nGo Version: go1.26.8")
    assert build.ensure_tool(etcd).source == "path"


def test_kubectl_in_range_is_used_beside_the_built_plane_binaries(env):
    kubernetes = Tool(
        name="kubernetes",
        module="k8s.io/kubernetes",
        version="v1.35.4",
        binaries={"kube-apiserver": "a", "kubectl": "b"},
        supported={"kubectl": SpecifierSet(">=1.34.0,<1.37.0")},
    )
    kubectl = env.install("kubectl", "Client Version: v1.36.1\nKustomize Version: v5.7.1")
    result = build.ensure_tool(kubernetes)
    assert result.source == "built" and env.built == ["kubernetes"]
    assert (env.bin / "kubectl").resolve() == kubectl
    assert (env.bin / "kube-apiserver").resolve().parent == build.cached_dir(kubernetes) / "bin"
    assert result.used() == f"built from source at v1.35.4; kubectl found on PATH at 1.36.1 ({kubectl})"
    # The next run reuses the build and still the installed kubectl.
    again = build.ensure_tool(kubernetes)
    assert again.source == "cache" and (env.bin / "kubectl").resolve() == kubectl
    # A vendor build is judged by its x.y.z.
    env.install("kubectl", "Client Version: v1.32.4-dispatcher")
    assert build.ensure_tool(kubernetes).notes == [
        f"kubectl 1.32.4-dispatcher on PATH ({kubectl}) is outside >=1.34.0,<1.37.0"
    ]
    assert (env.bin / "kubectl").resolve() != kubectl


def pulumi_pair() -> tuple[Tool, Tool]:
    supported = SpecifierSet(">=3.259.0,<4", prereleases=False)
    cli = Tool(
        name="pulumi",
        module="github.com/pulumi/pulumi/pkg/v3",
        version="v3.259.0",
        binaries={"pulumi": "cmd"},
        supported={"pulumi": supported},
        paired_with="pulumi-language-python",
    )
    host = Tool(
        name="pulumi-language-python",
        module="github.com/pulumi/pulumi/sdk/python/cmd/pulumi-language-python/v3",
        version="v3.259.0",
        binaries={"pulumi-language-python": "cmd"},
        companions=(Companion("pulumi-language-python-exec", "github.com/pulumi/pulumi/sdk/v3", "python/cmd/x"),),
        supported={"pulumi-language-python": supported},
        paired_with="pulumi",
    )
    return cli, host


def test_the_official_cli_and_its_bundled_host_are_used_together(env):
    cli, host = pulumi_pair()
    env.install("pulumi", "v3.262.0")
    env.install("pulumi-language-python", "3.262.0")
    env.install("pulumi-language-python-exec", "")
    assert build.ensure_tool(cli, paired=host).used().startswith("pulumi found on PATH at 3.262.0")
    assert build.ensure_tool(host, paired=cli).source == "path"
    assert env.built == []


@pytest.mark.parametrize(
    "installed",
    [
        {"pulumi": "v3.262.0"},  # a CLI without its host
        {"pulumi": "v3.262.0", "pulumi-language-python": "3.261.0", "pulumi-language-python-exec": ""},
        {"pulumi": "v3.258.0", "pulumi-language-python": "3.258.0", "pulumi-language-python-exec": ""},
        {"pulumi": "v3.262.0", "pulumi-language-python": "3.262.0"},  # the host without its exec shim
    ],
)
def test_cli_and_host_are_built_unless_one_supported_release_provides_both(env, installed):
    cli, host = pulumi_pair()
    for name, output in installed.items():
        env.install(name, output)
    assert build.ensure_tool(cli, paired=host).source == "built"
    assert build.ensure_tool(host, paired=cli).source == "built"
    assert env.built == ["pulumi", "pulumi-language-python"]


def test_the_lock_states_ranges_for_the_installed_tools_people_have():
    lock = load_lock()
    ranges = {name: spec for tool in lock.tools.values() for name, spec in tool.supported.items()}
    assert set(ranges) == {"pulumi", "pulumi-language-python", "helm", "kustomize", "kubectl"}
    sdk = lock.python["pulumi"]
    for name in ("pulumi", "pulumi-language-python"):
        # Never older than the SDK, and the CLI's range is its host's.
        assert sdk in ranges[name] and "3.258.9" not in ranges[name] and "4.0.0" not in ranges[name]
    assert ranges["pulumi"] == ranges["pulumi-language-python"]
    for tool in lock.tools.values():
        for name in tool.supported:
            assert tool.reported_version.lstrip("v") in tool.supported[name], f"{name}: its pin is outside its range"


def write_lock(tmp_path: Path, tool_spec: dict) -> Path:
    path = tmp_path / "versions.lock.yaml"
    path.write_text(json.dumps({"lockVersion": 1, "tools": tool_spec}))
    return path


def test_the_lock_refuses_a_range_it_cannot_read_or_for_no_binary_of_the_tool(tmp_path):
    spec = {"module": "m", "version": "v1.0.0", "binaries": {"helm": "p"}}
    with pytest.raises(LockError, match="'about 3' is not a version range"):
        load_lock(write_lock(tmp_path, {"helm": {**spec, "supported": {"helm": "about 3"}}}))
    with pytest.raises(LockError, match="'kubectl' is not one of its binaries"):
        load_lock(write_lock(tmp_path, {"helm": {**spec, "supported": {"kubectl": ">=1"}}}))
    with pytest.raises(LockError, match="must name a tool paired back"):
        load_lock(write_lock(tmp_path, {"helm": {**spec, "pairedWith": "helm-unittest"}}))
