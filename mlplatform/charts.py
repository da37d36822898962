"""Our own Helm charts (charts/<name>), rendered with the pinned helm so that every object
they hold becomes a Pulumi resource of its own (and part of the GitOps export)."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import yaml

from mlplatform.paths import BIN_DIR

CHARTS_DIR = Path(__file__).resolve().parent.parent / "charts"


class ChartError(RuntimeError):
    pass


def helm_binary() -> str:
    """The pinned helm in the tool links, else one on PATH (a user's laptop)."""
    if (BIN_DIR / "helm").exists():
        return str(BIN_DIR / "helm")
    found = shutil.which("helm")
    if not found:
        raise ChartError("helm is needed to render our charts: run `mlplatform tools --only render`")
    return found


def chart_path(chart: str) -> Path:
    path = CHARTS_DIR / chart
    if not (path / "Chart.yaml").exists():
        raise ChartError(f"chart {chart!r} not found at {path}")
    return path


def chart_metadata(chart: str) -> dict[str, Any]:
    return yaml.safe_load((chart_path(chart) / "Chart.yaml").read_text())


def helm_template(
    chart: str,
    release: str,
    namespace: str,
    values: dict[str, Any],
    *,
    kube_version: str | None = None,
    api_versions: tuple[str, ...] = (),
) -> list[dict[str, Any]]:
    """`helm template` of one of our charts with these values; the objects, empty ones dropped.

    Values go in as a file (never on the command line, so secrets stay out of process lists);
    the chart's own validation (values.schema.json, templates/validation.yml) runs here, and
    its message is raised as it is.
    """
    with tempfile.TemporaryDirectory(prefix=f"mlplatform-{chart}-") as work:
        values_file = Path(work, "values.json")
        values_file.write_text(json.dumps(values))
        command = [
            helm_binary(),
            "template",
            release,
            str(chart_path(chart)),
            "--namespace",
            namespace,
            "--values",
            str(values_file),
        ]
        if kube_version:
            command += ["--kube-version", kube_version]
        for api_version in api_versions:
            command += ["--api-versions", api_version]
        proc = subprocess.run(command, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ChartError(f"chart {chart}: helm template failed: {proc.stderr.strip()}")
    documents = [doc for doc in yaml.safe_load_all(proc.stdout) if doc]
    for document in documents:
        # helm leaves the release namespace implicit on namespaced objects; Pulumi needs it.
        metadata = document.setdefault("metadata", {})
        if document.get("kind") not in CLUSTER_SCOPED_KINDS:
            metadata.setdefault("namespace", namespace)
    return documents


# Kinds our charts may hold that live outside any namespace.
CLUSTER_SCOPED_KINDS = frozenset(
    {
        "Namespace",
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
        "PriorityClass",
        "StorageClass",
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
    }
)
