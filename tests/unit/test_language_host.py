"""The stand-in Pulumi language host, driven through its gRPC servicer methods."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from google.protobuf import struct_pb2
from pulumi.runtime.proto import language_pb2

from mlplatform.lock import load_lock
from mlplatform.toolchain.language_host import USER_ACTIONABLE_EXIT, PythonLanguageHost, main
from tests.conftest import REPO_ROOT


class _Context:
    def __init__(self) -> None:
        self.callbacks = []

    def add_callback(self, callback) -> None:
        self.callbacks.append(callback)


def _info(root: Path, virtualenv: str | None = None, entry: str = ".") -> language_pb2.ProgramInfo:
    options = struct_pb2.Struct()
    if virtualenv:
        options.update({"virtualenv": virtualenv})
    return language_pb2.ProgramInfo(
        root_directory=str(root), program_directory=str(root), entry_point=entry, options=options
    )


def _recording_shim(tmp_path: Path, exit_code: int) -> Path:
    """An exec shim that records what it was started with, then exits with `exit_code`."""
    shim = tmp_path / "shim.py"
    shim.write_text(
        "import json, os, sys\n"
        f"record = {{'argv': sys.argv[1:], 'cwd': os.getcwd(), 'config': os.environ['PULUMI_CONFIG'],"
        " 'secrets': os.environ['PULUMI_CONFIG_SECRET_KEYS']}\n"
        f"open({str(tmp_path / 'record.json')!r}, 'w').write(json.dumps(record))\n"
        f"sys.exit({exit_code})\n"
    )
    return shim


def test_required_packages_are_the_resource_plugins_of_the_installed_sdks():
    host = PythonLanguageHost("127.0.0.1:1", Path("unused"))
    request = language_pb2.GetRequiredPackagesRequest(info=_info(REPO_ROOT, ".venv"))
    packages = {(p.name, p.kind, p.version) for p in host.GetRequiredPackages(request, _Context()).packages}
    # The provider the engine loads is the one the pulumi-kubernetes pin asks for.
    assert ("kubernetes", "resource", load_lock().python["pulumi-kubernetes"]) in packages


def test_a_missing_virtualenv_is_named():
    host = PythonLanguageHost("127.0.0.1:1", Path("unused"))
    request = language_pb2.GetRequiredPackagesRequest(info=_info(REPO_ROOT, "no-such-venv"))
    with pytest.raises(FileNotFoundError, match="no-such-venv"):
        host.GetRequiredPackages(request, _Context())


def test_run_passes_the_engine_context_and_config_to_the_exec_shim(tmp_path):
    host = PythonLanguageHost("127.0.0.1:4242", _recording_shim(tmp_path, 0))
    request = language_pb2.RunRequest(
        project="mlplatform",
        stack="lab",
        pwd=str(tmp_path),
        dryRun=True,
        parallel=16,
        monitor_address="127.0.0.1:5151",
        config={"mlplatform:environment": "lab"},
        configSecretKeys=["mlplatform:token"],
        info=_info(tmp_path),
    )
    response = host.Run(request, _Context())
    assert (response.error, response.bail) == ("", False)
    record = json.loads((tmp_path / "record.json").read_text())
    argv = record["argv"]
    flags = dict(zip(argv[:-1:2], argv[1:-1:2], strict=True))
    assert flags["--monitor"] == "127.0.0.1:5151"
    assert flags["--engine"] == "127.0.0.1:4242"
    assert (flags["--stack"], flags["--dry_run"], flags["--parallel"]) == ("lab", "true", "16")
    assert argv[-1] == str(tmp_path)
    assert json.loads(record["config"]) == {"mlplatform:environment": "lab"}
    assert json.loads(record["secrets"]) == ["mlplatform:token"]


@pytest.mark.parametrize(
    ("exit_code", "error", "bail"),
    [(3, "Program exited with non-zero exit code: 3", False), (USER_ACTIONABLE_EXIT, "", True)],
)
def test_run_reports_a_failed_program(tmp_path, exit_code, error, bail):
    host = PythonLanguageHost("127.0.0.1:1", _recording_shim(tmp_path, exit_code))
    request = language_pb2.RunRequest(pwd=str(tmp_path), info=_info(tmp_path))
    response = host.Run(request, _Context())
    assert (response.error, response.bail) == (error, bail)


def test_run_plugin_streams_output_then_the_exit_code(tmp_path):
    pack = tmp_path / "pack"
    pack.mkdir()
    (pack / "__main__.py").write_text(
        "import os, sys\nprint('port', sys.argv[1], os.environ['PACK_SETTING'])\n"
        "print('warning', file=sys.stderr)\nsys.exit(5)\n"
    )
    host = PythonLanguageHost("127.0.0.1:1", Path("unused"))
    request = language_pb2.RunPluginRequest(
        pwd=str(tmp_path), args=["127.0.0.1:9"], env=["PACK_SETTING=on"], info=_info(pack), kind="analyzer"
    )
    responses = list(host.RunPlugin(request, _Context()))
    stdout = b"".join(r.stdout for r in responses if r.WhichOneof("output") == "stdout")
    stderr = b"".join(r.stderr for r in responses if r.WhichOneof("output") == "stderr")
    assert stdout == b"port 127.0.0.1:9 on\n"
    assert stderr == b"warning\n"
    assert responses[-1].WhichOneof("output") == "exitcode"
    assert responses[-1].exitcode == 5


def test_version_probe_reports_the_sdk_the_host_drives(capsys):
    assert main(["--exec-shim", sys.executable, "-version"]) == 0
    assert load_lock().python["pulumi"] in capsys.readouterr().out
