"""A real control plane for the e2e tests, in its own state folder and port range so it
never touches a plane the developer runs with `make cluster`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from mlplatform.paths import BIN_DIR
from tests.conftest import REPO_ROOT, STACKS


def stack_of(item: pytest.Item) -> str | None:
    """The stack whose applied plane a test reads: its `on_stack` marker or its `stack` parameter."""
    marker = item.get_closest_marker("on_stack")
    if marker is not None:
        return marker.args[0]
    callspec = getattr(item, "callspec", None)
    return callspec.params.get("stack") if callspec is not None else None


def pytest_collection_modifyitems(items):
    """Tests that read an applied stack run together, the one that deletes it last, so each
    shipped stack is rendered and applied once and its plane stopped as soon as it is done:
    first the tests on a bare plane, then lab, openshift and cloud, then the rest (the GKE
    fixture goes on the session's plane once the lab stack has left it)."""
    for item in items:
        if "/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)
    position = {item: index for index, item in enumerate(items)}

    def order(item: pytest.Item) -> tuple[int, int, int]:
        stack = stack_of(item)
        if stack is None:
            group = 0
        elif stack in STACKS:
            group = 1 + STACKS.index(stack)
        else:
            group = 1 + len(STACKS)
        deletes = item.get_closest_marker("deletes_stack") is not None
        return group, int(deletes), position[item]

    items.sort(key=order)


@dataclass
class Plane:
    env: dict[str, str]
    kubeconfig: Path
    state_dir: Path
    # The stand-in for NVIDIA's software on this plane (tests/simulated_nvidia).
    nvidia: subprocess.Popen | None = None

    def stop_nvidia(self) -> None:
        if self.nvidia is not None:
            self.nvidia.terminate()
            self.nvidia.wait(timeout=20)
            self.nvidia = None

    def down(self, check: bool = True) -> None:
        self.stop_nvidia()
        self.mlplatform("cluster", "down", "--purge", check=check)

    def mlplatform(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            [sys.executable, "-m", "mlplatform", *args], cwd=REPO_ROOT, env=self.env, capture_output=True, text=True
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"mlplatform {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
        return proc

    def kubectl(self, *args: str, input_text: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            [str(BIN_DIR / "kubectl"), f"--kubeconfig={self.kubeconfig}", *args],
            input=input_text,
            capture_output=True,
            text=True,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed:\n{proc.stderr}")
        return proc

    def kubectl_as(self, group: str, *args: str, input_text: str | None = None) -> subprocess.CompletedProcess:
        """kubectl as a member of `group` (impersonated): the apiserver's RBAC and admission
        judge it; a refusal is returned, not raised."""
        return self.kubectl(*args, f"--as={group}-member", f"--as-group={group}", input_text=input_text, check=False)

    def get(self, *args: str) -> dict:
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)

    def wait_for(self, what: str, predicate, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.5)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}")


# Planes of one test session sit at offsets from this base (0, 100, 200, ...); another base
# lets two test sessions run side by side on one machine.
E2E_PORT_BASE = int(os.environ.get("MLPLATFORM_E2E_PORT_BASE", "27000"))


def start_plane(state: Path, port_offset: int, stack: str = "lab") -> Plane:
    missing = [
        b
        for b in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok", "kubectl")
        if not (BIN_DIR / b).exists()
    ]
    if missing:
        pytest.fail(f"e2e needs {', '.join(missing)}: run `make tools-test` (make e2e does)", pytrace=False)
    env = dict(
        os.environ, MLPLATFORM_STATE_DIR=str(state), MLPLATFORM_CLUSTER_PORT_BASE=str(E2E_PORT_BASE + port_offset)
    )
    instance = Plane(env=env, kubeconfig=state / "cluster" / "kubeconfig", state_dir=state)
    started = time.monotonic()
    instance.mlplatform("cluster", "up", "--stack", stack, "--simulated")
    print(f"\ncontrol plane up in {time.monotonic() - started:.1f}s")
    instance.nvidia = start_simulated_nvidia(instance)
    return instance


def start_simulated_nvidia(plane: Plane) -> subprocess.Popen:
    """NVIDIA's software as it would behave on the plane's nodes; its log beside the plane's."""
    mirror = os.environ.get("MLPLATFORM_MIRROR")
    if not mirror:
        pytest.fail("the simulated NVIDIA stack reads MIG layouts from the upstream mirror: set MLPLATFORM_MIRROR")
    log = open(plane.state_dir / "simulated-nvidia.log", "a")  # noqa: SIM115 - the process keeps it
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.simulated_nvidia",
            f"--kubeconfig={plane.kubeconfig}",
            f"--kubectl={BIN_DIR / 'kubectl'}",
            f"--mirror={mirror}",
        ],
        cwd=REPO_ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


@pytest.fixture(scope="session")
def plane(tmp_path_factory) -> Plane:
    instance = start_plane(tmp_path_factory.mktemp("plane-state"), 0)
    yield instance
    instance.down()


# Planes for whole stacks: the ML services bring ~60 CRDs and ~40 Deployments per stack.
STACK_PORT_OFFSETS = {"lab": 400, "openshift": 500, "cloud": 600}


@dataclass
class DeployedStack:
    plane: Plane
    stack: str
    out: Path
    manifests: list[dict]


class StackPlanes:
    """One plane per shipped stack, started on first use with the stack applied once (its
    render, in the ordered phases): the tests that read a whole stack share it, and the test
    that deletes it asks `delete`. The lab stack goes on the session's plane (the GPU layer
    and tenancy tests read it there, beside their throwaway namespaces); openshift and cloud,
    which bring other environment APIs and node pools, on planes of their own. Applying a full
    stack and deleting it takes minutes: each stack once keeps the suite inside CI's limit."""

    SHARES_SESSION_PLANE = "lab"

    def __init__(self, factory: pytest.TempPathFactory, session_plane) -> None:
        self._factory = factory
        self._session_plane = session_plane
        self._planes: dict[str, Plane] = {}
        self._deployed: dict[str, DeployedStack] = {}

    def __call__(self, stack: str) -> DeployedStack:
        from tests.e2e.test_ml_services import bind_volumes
        from tests.e2e.test_render_apply import apply_stack

        if stack not in self._deployed:
            if stack not in self._planes:
                if stack == self.SHARES_SESSION_PLANE:
                    self._planes[stack] = self._session_plane()
                else:
                    state = self._factory.mktemp(f"plane-{stack}")
                    self._planes[stack] = start_plane(state, STACK_PORT_OFFSETS[stack], stack)
            plane = self._planes[stack]
            out = self._factory.mktemp(f"render-{stack}")
            manifests = apply_stack(plane, stack, out)
            bind_volumes(plane, manifests)
            self._deployed[stack] = DeployedStack(plane, stack, out, manifests)
        return self._deployed[stack]

    def delete(self, stack: str) -> None:
        from tests.e2e.test_render_apply import delete_stack

        deployed = self._deployed.pop(stack)
        delete_stack(deployed.plane, deployed.out)

    def release(self, stack: str) -> None:
        """Stop a stack's plane once no test needs it (idle planes still cost CPU); the
        session's plane stays up for the tests after."""
        self._deployed.pop(stack, None)
        plane = self._planes.pop(stack, None)
        if plane is not None and stack != self.SHARES_SESSION_PLANE:
            plane.down(check=False)

    def close(self) -> None:
        for stack in list(self._planes):
            self.release(stack)


@pytest.fixture(scope="session")
def stack_planes(request, tmp_path_factory):
    planes = StackPlanes(tmp_path_factory, lambda: request.getfixturevalue("plane"))
    yield planes
    planes.close()


@pytest.fixture(scope="module")
def lab(stack_planes):
    """The plane the lab stack is applied to (tests marked on_stack("lab"))."""
    return stack_planes("lab").plane


@pytest.fixture
def make_namespace(plane):
    """Creates throwaway namespaces; deletes them (and what runs in them) after the test, so
    one test's pods never hold capacity another test counts on."""
    import uuid

    created: list[str] = []

    def make(labels: dict[str, str] | None = None) -> str:
        name = f"e2e-{uuid.uuid4().hex[:8]}"
        doc = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels or {}}}
        plane.kubectl("apply", "-f", "-", input_text=json.dumps(doc))
        created.append(name)
        plane.wait_for(
            f"service account in {name}",
            lambda: plane.kubectl("get", "sa", "default", "-n", name, check=False).returncode == 0,
        )
        return name

    yield make
    for name in created:
        plane.kubectl("delete", "namespace", name, "--wait=true", "--timeout=120s")
