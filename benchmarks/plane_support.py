"""Shared pieces of the plane benchmarks: a fresh local control plane on ports of its own, the
lab export applied in its two ordered phases (as the e2e harness applies it), and the wait for
the ML services' Deployments. Timings here are wall-clock on a shared machine, so every figure
is printed next to the load average it was taken under."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

# As `make` does: the upstream mirror beside the project, where there is one.
_MIRROR_BESIDE = REPO_ROOT.parent / "shared" / "upstream"
if "MLPLATFORM_MIRROR" not in os.environ and _MIRROR_BESIDE.is_dir():
    os.environ["MLPLATFORM_MIRROR"] = str(_MIRROR_BESIDE)

import yaml  # noqa: E402

from mlplatform.paths import BIN_DIR  # noqa: E402
from mlplatform.render import _apply_order  # noqa: E402
from tests.e2e.conftest import E2E_PORT_BASE, Plane, start_plane  # noqa: E402
from tests.e2e.secret_references import secrets_from_references  # noqa: E402
from tests.e2e.test_ml_services import bind_volumes, service_deployments, unavailable  # noqa: E402
from tests.e2e.test_render_apply import (  # noqa: E402
    _api_group,
    _apply_files,
    _without_webhook_servers,
    identities,
    labelled_inventory,
    render,
)

__all__ = [
    "BIN_DIR",
    "Plane",
    "bind_volumes",
    "identities",
    "labelled_inventory",
    "service_deployments",
    "unavailable",
]

# Every benchmark's planes sit at fixed offsets from one base, below Linux's ephemeral ports and
# clear of the quick start's plane (26000) and the tests' (27000 and up): the engine's at +0 to
# +1900, the peer and GitOps planes at +5000, the plane starts at +6000, the scale render's at
# +7000. MLPLATFORM_BENCH_PORT_BASE moves them all together.
BENCH_PORT_BASE = int(os.environ.get("MLPLATFORM_BENCH_PORT_BASE", "24000"))
ENGINE_PORT_BASE = BENCH_PORT_BASE
DEFAULT_PORT_BASE = BENCH_PORT_BASE + 5000
PLANE_START_PORT_BASE = BENCH_PORT_BASE + 6000
SCALE_RENDER_PORT_BASE = BENCH_PORT_BASE + 7000


def load() -> str:
    """The 1-minute load average, to print beside a figure."""
    return f"{os.getloadavg()[0]:.1f}"


def machine() -> str:
    memory_kib = next(
        int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")
    )
    return f"{os.cpu_count()} cores, {memory_kib / 2**20:.0f} GiB"


def fresh_plane(state: Path, port_base: int, stack: str = "lab") -> Plane:
    """`mlplatform cluster up --simulated` in its own state folder, at `port_base`."""
    return start_plane(state, port_base - E2E_PORT_BASE, stack)


def stop_plane(plane: Plane) -> None:
    # The stand-in for NVIDIA's software is the harness's process, not the plane's.
    plane.stop_nvidia()
    plane.mlplatform("cluster", "down", "--purge", check=False)


def render_export(stack: str, out: Path) -> list[dict]:
    """The stack's export without aggregated APIServices, as the e2e harness applies it (their
    servers never run on the simulated plane), with the Secrets its references name made as a
    secret tool would (test values), in apply order."""
    manifests = [m for m in render(stack, out) if m["kind"] != "APIService"]
    return sorted(manifests + secrets_from_references(out), key=_apply_order)


def phases(manifests: list[dict]) -> tuple[list[dict], list[dict]]:
    """Everything but the custom resources of CRDs the export itself brings; then those."""
    brought = {m["spec"]["group"] for m in manifests if m["kind"] == "CustomResourceDefinition"}
    return (
        [m for m in manifests if _api_group(m) not in brought],
        [m for m in manifests if _api_group(m) in brought],
    )


def apply_phases(plane: Plane, manifests: list[dict], out: Path) -> dict[str, float]:
    """The ordered apply of `tests.e2e.test_render_apply.apply_stack` on a plane that is already
    up: phase one, webhooks to failurePolicy Ignore, CRDs Established, phase two. No retry: a
    refused object raises. Returns the seconds of each step."""
    first, second = phases(manifests)
    seconds = {}
    started = time.monotonic()
    _apply_files(plane, first, out / "phase1")
    seconds["phase 1"] = time.monotonic() - started
    if second:
        started = time.monotonic()
        _without_webhook_servers(plane, first)
        seconds["webhook handling"] = time.monotonic() - started
        started = time.monotonic()
        plane.kubectl(
            "wait",
            "--for=condition=Established",
            "crd",
            *sorted(m["metadata"]["name"] for m in first if m["kind"] == "CustomResourceDefinition"),
            "--timeout=60s",
        )
        _apply_files(plane, second, out / "phase2")
        seconds["phase 2"] = time.monotonic() - started
    return seconds


def without_webhook_servers_in_cluster(plane: Plane, manifests: list[dict]) -> None:
    """The harness's webhook handling for those of the manifests that exist in the cluster."""
    present = [
        m
        for m in manifests
        if m["kind"] in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration", "CustomResourceDefinition")
        and plane.kubectl("get", m["kind"].lower(), m["metadata"]["name"], check=False).returncode == 0
    ]
    _without_webhook_servers(plane, present)


def without_webhook_servers_in_manifests(manifests: list[dict]) -> None:
    """The same handling written into the manifests themselves, for runs that apply them more
    than once: a re-apply would otherwise set failurePolicy back to what the manifest says."""
    for manifest in manifests:
        if manifest["kind"] in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
            for webhook in manifest.get("webhooks", []):
                webhook["failurePolicy"] = "Ignore"
        elif (
            manifest["kind"] == "CustomResourceDefinition"
            and manifest["spec"].get("conversion", {}).get("strategy") == "Webhook"
        ):
            manifest["spec"]["conversion"] = {"strategy": "None"}


def write_phases(manifests: list[dict], out: Path) -> tuple[Path, Path | None]:
    """Each phase as a folder of one file per object, in apply order."""
    folders: list[Path | None] = []
    for name, docs in zip(("phase1", "phase2"), phases(manifests), strict=True):
        if not docs:
            folders.append(None)
            continue
        folder = out / name
        folder.mkdir(parents=True)
        for index, manifest in enumerate(docs):
            (folder / f"{index:04d}.yaml").write_text(yaml.safe_dump(manifest))
        folders.append(folder)
    return folders[0], folders[1]


def wait_available(plane: Plane, deployments: list[tuple[str, str]], timeout: float) -> None:
    plane.wait_for(
        f"{len(deployments)} Deployments Available", lambda: not unavailable(plane, deployments), timeout=timeout
    )


def deployments_of(manifests: list[dict]) -> list[tuple[str, str]]:
    return sorted(
        (m["metadata"].get("namespace", "default"), m["metadata"]["name"])
        for m in manifests
        if m["kind"] == "Deployment"
    )


def kubectl_cmd(plane: Plane, *args: str) -> list[str]:
    return [str(BIN_DIR / "kubectl"), f"--kubeconfig={plane.kubeconfig}", *args]


def run(cmd: list[str], input_text: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, input=input_text, capture_output=True, text=True)


def dump_stream(manifests: list[dict]) -> str:
    return yaml.safe_dump_all(manifests, sort_keys=False)
