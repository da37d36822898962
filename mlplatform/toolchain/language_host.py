"""A Pulumi language host for Python programs, for machines that cannot build the upstream one.

The Pulumi CLI starts `pulumi-language-python <engine address>`, reads a port from its stdout
and then drives it over the LanguageRuntime gRPC service (the protocol ships with the Pulumi
Python SDK). This host answers the calls `preview`, `up`, `refresh`, `destroy` and policy packs
need: it lists the resource plugins the installed SDKs require, runs the program through the
SDK's `pulumi-language-python-exec` shim, and runs Python policy packs as plugins.

Where the upstream `pulumi-language-python` binary is on PATH, that one is used instead
(`mlplatform tools` prefers it); this module is the stand-in when the Go module proxy refuses it.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
from concurrent import futures
from pathlib import Path

import grpc
from google.protobuf import empty_pb2
from pulumi.runtime.proto import language_pb2, language_pb2_grpc, plugin_pb2

# The exec shim exits with this code after it has shown the user an actionable message;
# the engine then must not print a second, generic error.
USER_ACTIONABLE_EXIT = 32

# Prints the resource plugins the program's interpreter has SDKs for, as JSON lines. Runs in
# the program's own interpreter, which may be another virtualenv than the host's.
_LIST_PLUGINS = r"""
import json, importlib.metadata as md
seen = set()
for dist in md.distributions():
    for f in dist.files or ():
        if f.name != "pulumi-plugin.json":
            continue
        try:
            data = json.loads(f.read_text())
        except (OSError, ValueError, TypeError):
            continue
        if not data.get("resource"):
            continue
        name = data.get("name") or dist.metadata["Name"].removeprefix("pulumi_").removeprefix("pulumi-")
        version = data.get("version") or dist.version
        key = (name, version)
        if key not in seen:
            seen.add(key)
            print(json.dumps({"name": name, "version": version, "server": data.get("server", "")}))
"""

_LIST_DISTRIBUTIONS = r"""
import json, importlib.metadata as md
for dist in md.distributions():
    print(json.dumps({"name": dist.metadata["Name"], "version": dist.version}))
"""


def sdk_version() -> str:
    from importlib.metadata import version

    return version("pulumi")


def _virtualenv_python(directory: str, options: dict) -> str:
    """The interpreter a program or plugin runs with: its `virtualenv` option, else ours."""
    venv = options.get("virtualenv")
    if venv:
        root = Path(venv) if os.path.isabs(venv) else Path(directory) / venv
        candidate = root / "bin" / "python"
        if not candidate.exists():
            raise FileNotFoundError(
                f"virtualenv {root} (runtime option `virtualenv`) has no bin/python; create it first (make setup)"
            )
        return str(candidate)
    return sys.executable


def _options(info: language_pb2.ProgramInfo | None) -> dict:
    if info is None or not info.HasField("options"):
        return {}
    from google.protobuf.json_format import MessageToDict

    return MessageToDict(info.options)


def _json_lines(python: str, script: str, cwd: str) -> list[dict]:
    proc = subprocess.run([python, "-c", script], cwd=cwd or None, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"{python} could not list its packages: {proc.stderr.strip()[-500:]}")
    return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]


class PythonLanguageHost(language_pb2_grpc.LanguageRuntimeServicer):
    def __init__(self, engine_address: str, exec_shim: Path) -> None:
        self.engine_address = engine_address
        self.exec_shim = exec_shim
        self._running: set[subprocess.Popen] = set()
        self._lock = threading.Lock()

    # -- discovery -------------------------------------------------------------------------

    def Handshake(self, request, context):
        if request.engine_address:
            self.engine_address = request.engine_address
        return language_pb2.LanguageHandshakeResponse()

    def GetPluginInfo(self, request, context):
        return plugin_pb2.PluginInfo(version=sdk_version())

    def _program_python(self, info: language_pb2.ProgramInfo) -> tuple[str, str]:
        directory = info.root_directory or info.program_directory or os.getcwd()
        return _virtualenv_python(directory, _options(info)), info.program_directory or directory

    def _resource_plugins(self, info: language_pb2.ProgramInfo) -> list[dict]:
        python, cwd = self._program_python(info)
        return _json_lines(python, _LIST_PLUGINS, cwd)

    def GetRequiredPlugins(self, request, context):
        plugins = [plugin_pb2.PluginDependency(kind="resource", **p) for p in self._resource_plugins(request.info)]
        return language_pb2.GetRequiredPluginsResponse(plugins=plugins)

    def GetRequiredPackages(self, request, context):
        packages = [plugin_pb2.PackageDependency(kind="resource", **p) for p in self._resource_plugins(request.info)]
        return language_pb2.GetRequiredPackagesResponse(packages=packages)

    def GetProgramDependencies(self, request, context):
        python, cwd = self._program_python(request.info)
        deps = [
            language_pb2.DependencyInfo(name=d["name"], version=d["version"])
            for d in _json_lines(python, _LIST_DISTRIBUTIONS, cwd)
        ]
        return language_pb2.GetProgramDependenciesResponse(dependencies=deps)

    def About(self, request, context):
        python, _ = self._program_python(request.info)
        version = subprocess.run([python, "--version"], capture_output=True, text=True).stdout.split()[-1]
        return language_pb2.AboutResponse(executable=python, version=version)

    def InstallDependencies(self, request, context):
        # Dependencies come from `make setup` (pyproject.toml pins); say so rather than install.
        python, _ = self._program_python(request.info)
        message = f"dependencies are managed by the project (make setup); using {python}\n"
        yield language_pb2.InstallDependenciesResponse(stdout=message.encode())

    # -- programs --------------------------------------------------------------------------

    def _spawn(self, cmd: list[str], cwd: str, env: dict[str, str], **kwargs) -> subprocess.Popen:
        proc = subprocess.Popen(cmd, cwd=cwd or None, env=env, start_new_session=True, **kwargs)
        with self._lock:
            self._running.add(proc)
        return proc

    def _reap(self, proc: subprocess.Popen) -> int:
        code = proc.wait()
        with self._lock:
            self._running.discard(proc)
        return code

    def Run(self, request, context):
        info = request.info
        root = info.root_directory or request.pwd
        python = _virtualenv_python(root, _options(info))
        program = request.program
        if info.program_directory:
            entry = info.entry_point or "."
            program = os.path.normpath(os.path.join(info.program_directory, entry))
        args = [
            python,
            "-u",
            str(self.exec_shim),
            "--monitor",
            request.monitor_address,
            "--engine",
            self.engine_address,
            "--project",
            request.project,
            "--stack",
            request.stack,
            "--pwd",
            request.pwd,
            "--dry_run",
            "true" if request.dryRun else "false",
            "--parallel",
            str(request.parallel),
            "--organization",
            request.organization,
            "--root_directory",
            root,
            program,
            *request.args,
        ]
        env = dict(os.environ)
        env["PULUMI_CONFIG"] = json.dumps(dict(request.config))
        env["PULUMI_CONFIG_SECRET_KEYS"] = json.dumps(list(request.configSecretKeys))
        env["PULUMI_PROJECT"] = request.project
        env["PULUMI_STACK"] = request.stack
        if request.organization:
            env["PULUMI_ORGANIZATION"] = request.organization
        code = self._reap(self._spawn(args, request.pwd, env))
        if code == 0:
            return language_pb2.RunResponse()
        if code == USER_ACTIONABLE_EXIT:
            return language_pb2.RunResponse(bail=True)
        return language_pb2.RunResponse(error=f"Program exited with non-zero exit code: {code}")

    def RunPlugin(self, request, context):
        # Python plugins (policy packs) are folders with a __main__.py, run by their interpreter.
        info = request.info
        directory = info.program_directory or request.program
        python = _virtualenv_python(info.root_directory or directory, _options(info))
        env = dict(os.environ)
        env.update(item.split("=", 1) for item in request.env if "=" in item)
        proc = self._spawn(
            [python, "-u", directory, *request.args],
            request.pwd,
            env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        chunks: list[language_pb2.RunPluginResponse] = []
        ready = threading.Condition()
        open_streams = [2]

        def pump(stream, field: str) -> None:
            for data in iter(lambda: os.read(stream.fileno(), 65536), b""):
                with ready:
                    chunks.append(language_pb2.RunPluginResponse(**{field: data}))
                    ready.notify()
            with ready:
                open_streams[0] -= 1
                ready.notify()

        for stream, field in ((proc.stdout, "stdout"), (proc.stderr, "stderr")):
            threading.Thread(target=pump, args=(stream, field), daemon=True).start()
        context.add_callback(lambda: proc.poll() is None and os.killpg(proc.pid, signal.SIGKILL))
        while True:
            with ready:
                while not chunks and open_streams[0]:
                    ready.wait()
                pending, chunks[:] = list(chunks), []
                finished = open_streams[0] == 0
            yield from pending
            if finished:
                break
        yield language_pb2.RunPluginResponse(exitcode=self._reap(proc))

    def Cancel(self, request, context):
        with self._lock:
            running = list(self._running)
        for proc in running:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        return empty_pb2.Empty()


def serve(engine_address: str, exec_shim: Path) -> None:
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=8),
        options=[("grpc.max_receive_message_length", 400 * 1024 * 1024)],
    )
    host = PythonLanguageHost(engine_address, exec_shim)
    language_pb2_grpc.add_LanguageRuntimeServicer_to_server(host, server)
    port = server.add_insecure_port("127.0.0.1:0")
    stopped = threading.Event()
    # The engine stops its plugins with SIGINT (or SIGTERM) once it is done with them.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopped.set())
    server.start()
    # The engine reads the port from the first line of stdout.
    print(port, flush=True)
    engine_pid = os.getppid()
    # An engine killed outright (kill -9, a lost CI runner) never stops its plugins: once our
    # parent is gone, so are we, and the program we run with us.
    while not stopped.wait(1.0):
        if os.getppid() != engine_pid:
            host.Cancel(None, None)
            break
    server.stop(grace=1).wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pulumi-language-python", description=__doc__.splitlines()[0])
    parser.add_argument("--exec-shim", type=Path, required=True, help="path of pulumi-language-python-exec")
    parser.add_argument("-version", "--version", action="store_true", help="print the version and exit")
    # Flags older engines pass; accepted and unused.
    parser.add_argument("-root", default="")
    parser.add_argument("-tracing", default="")
    parser.add_argument("-virtualenv", default="")
    parser.add_argument("-typechecker", default="")
    parser.add_argument("-toolchain", default="")
    parser.add_argument("engine_address", nargs="?")
    args, _unknown = parser.parse_known_args(argv)
    if args.version:
        print(f"{sdk_version()} (mlplatform language host, Pulumi Python SDK {sdk_version()})")
        return 0
    if not args.engine_address:
        parser.error("the engine address is required")
    if not args.exec_shim.is_file():
        parser.error(f"{args.exec_shim} does not exist (mlplatform tools --only engine fetches it)")
    serve(args.engine_address, args.exec_shim)
    return 0


if __name__ == "__main__":
    sys.exit(main())
