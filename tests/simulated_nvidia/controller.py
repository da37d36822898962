"""Writes what NVIDIA's software would publish onto the simulated plane's nodes.

python -m tests.simulated_nvidia --kubeconfig PATH --kubectl PATH --mirror PATH [--interval 1]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from tests.simulated_nvidia.stack import PREFIX, Cluster, node_state

# The labels this controller set last, so it removes only its own when they go stale.
OWNED_LABELS_ANNOTATION = "sim.mlplatform.io/nvidia-labels"


class Controller:
    def __init__(self, kubectl: str, kubeconfig: str, mirror: Path) -> None:
        self.base = [kubectl, f"--kubeconfig={kubeconfig}", "--request-timeout=20s"]
        self.mirror = mirror
        self.started: dict = {}
        self.mig_applied: dict = {}

    def _get(self, kinds: str, check: bool = True) -> list[dict]:
        proc = subprocess.run([*self.base, "get", kinds, "-A", "-o", "json"], capture_output=True, text=True)
        if proc.returncode != 0:
            if check:
                raise RuntimeError(proc.stderr.strip())
            return []
        return json.loads(proc.stdout)["items"]

    def read(self) -> Cluster:
        nodes, pods, configmaps = [], [], {}
        for item in self._get("nodes,pods,configmaps"):
            if item["kind"] == "Node":
                nodes.append(item)
            elif item["kind"] == "Pod":
                pods.append(item)
            else:
                configmaps[(item["metadata"]["namespace"], item["metadata"]["name"])] = item
        # The ClusterPolicy API exists only where the GPU operator's CRDs are installed.
        policies = self._get("clusterpolicies.nvidia.com", check=False)
        return Cluster(nodes, pods, configmaps, policies, self.mirror, self.started, self.mig_applied)

    def _patch(self, node: str, patch: dict, subresource: str | None = None) -> None:
        extra = [f"--subresource={subresource}"] if subresource else []
        subprocess.run(
            [*self.base, "patch", "node", node, *extra, "--type=merge", "-p", json.dumps(patch)],
            capture_output=True,
            text=True,
            check=True,
        )

    def reconcile(self) -> list[str]:
        """One round; returns a line per node changed."""
        cluster = self.read()
        # Forget pods and nodes that are gone.
        live_pods = {p["metadata"]["uid"] for p in cluster.pods}
        live_nodes = {n["metadata"]["uid"] for n in cluster.nodes}
        for key in [k for k in self.started if k[0] not in live_pods]:
            del self.started[key]
        for key in [k for k in self.mig_applied if k not in live_nodes]:
            del self.mig_applied[key]
        changes = []
        for node in cluster.nodes:
            name = node["metadata"]["name"]
            state = node_state(cluster, node)
            capacity = node["status"].get("capacity") or {}
            have = {k: v for k, v in capacity.items() if k.startswith(PREFIX)}
            want = {k: str(v) for k, v in state.resources.items()}
            if have != want:
                resources = {**{k: None for k in have if k not in want}, **want}
                self._patch(name, {"status": {"capacity": resources, "allocatable": resources}}, "status")
                changes.append(f"{name}: {want or 'no GPU resources'} ({'; '.join(state.notes) or 'ok'})")
            metadata = node["metadata"]
            labels = metadata.get("labels") or {}
            owned = set(json.loads((metadata.get("annotations") or {}).get(OWNED_LABELS_ANNOTATION, "[]")))
            stale = {k: None for k in owned if k not in state.labels}
            wanted = {k: v for k, v in state.labels.items() if labels.get(k) != v}
            if stale or wanted or owned != set(state.labels):
                self._patch(
                    name,
                    {
                        "metadata": {
                            "labels": {**stale, **wanted},
                            "annotations": {OWNED_LABELS_ANNOTATION: json.dumps(sorted(state.labels))},
                        }
                    },
                )
                changes.append(f"{name}: labels {sorted(wanted)} set, {sorted(stale)} removed")
        return changes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--kubectl", required=True)
    parser.add_argument("--mirror", required=True, type=Path)
    parser.add_argument("--interval", type=float, default=1.0)
    args = parser.parse_args(argv)
    controller = Controller(args.kubectl, args.kubeconfig, args.mirror)
    while True:
        try:
            for line in controller.reconcile():
                print(line, flush=True)
        except (RuntimeError, ValueError, subprocess.CalledProcessError) as exc:
            # The apiserver restarting, or a node deleted between read and write.
            print(f"reconcile failed: {exc}", file=sys.stderr, flush=True)
        time.sleep(args.interval)


if __name__ == "__main__":
    sys.exit(main())
