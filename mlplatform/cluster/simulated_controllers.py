"""Controllers a real cluster gets from its cloud or add-ons, stood in for on the local plane.

- Storage: no kubelet mounts anything here, so a claim only needs a volume object to bind to.
  Each pending claim gets a hostPath PersistentVolume of its size, access modes and class,
  pre-bound to it; volumes whose claim is gone are deleted, as a provisioner's `Delete`
  reclaim policy does.
- Load balancers: an ingress controller or a cloud's service controller publishes the address
  it serves an Ingress or a LoadBalancer Service on. Here each gets 127.0.0.1 in its status,
  so whatever waits for an address (Pulumi's readiness checks, GitOps health checks) sees one.

`mlplatform cluster up` starts this on the simulated plane only; a real cluster has the real ones.

    python -m mlplatform.cluster.simulated_controllers --kubeconfig PATH --kubectl PATH [--interval 2]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

VOLUME_LABEL = "mlplatform.io/simulated-volume"


def volume_for(claim: dict) -> dict:
    meta, spec = claim["metadata"], claim["spec"]
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {
            "name": f"sim-{meta['uid']}",
            "labels": {VOLUME_LABEL: "true"},
            "annotations": {"pv.kubernetes.io/provisioned-by": "mlplatform.io/simulated-provisioner"},
        },
        "spec": {
            "capacity": {"storage": spec["resources"]["requests"]["storage"]},
            "accessModes": spec.get("accessModes") or ["ReadWriteOnce"],
            "volumeMode": spec.get("volumeMode", "Filesystem"),
            "persistentVolumeReclaimPolicy": "Delete",
            "storageClassName": spec.get("storageClassName") or "",
            "hostPath": {"path": f"/var/lib/mlplatform-sim/{meta['namespace']}/{meta['name']}"},
            "claimRef": {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "namespace": meta["namespace"],
                "name": meta["name"],
                "uid": meta["uid"],
            },
        },
    }


def pending_claims(claims: list[dict], volumes: list[dict]) -> list[dict]:
    """Claims with no volume named and none of ours already reserved for them."""
    reserved = {v["spec"].get("claimRef", {}).get("uid") for v in volumes}
    return [
        c
        for c in claims
        if not c["spec"].get("volumeName")
        and c.get("status", {}).get("phase", "Pending") == "Pending"
        and c["metadata"]["uid"] not in reserved
        and not c["metadata"].get("deletionTimestamp")
    ]


def released_volumes(claims: list[dict], volumes: list[dict]) -> list[dict]:
    """Our volumes whose claim no longer exists (or was replaced by another of the same name)."""
    live = {c["metadata"]["uid"] for c in claims}
    return [
        v
        for v in volumes
        if v["metadata"].get("labels", {}).get(VOLUME_LABEL) == "true"
        and v["spec"].get("claimRef", {}).get("uid") not in live
    ]


SIMULATED_ADDRESS = {"ip": "127.0.0.1"}


def unaddressed(objects: list[dict]) -> list[dict]:
    """Ingresses and LoadBalancer Services with no address published yet."""
    waiting = []
    for obj in objects:
        if obj["kind"] == "Service" and obj["spec"].get("type") != "LoadBalancer":
            continue
        if not (obj.get("status", {}).get("loadBalancer", {}) or {}).get("ingress"):
            waiting.append(obj)
    return waiting


class SimulatedControllers:
    def __init__(self, kubectl: str, kubeconfig: str) -> None:
        self.base = [kubectl, f"--kubeconfig={kubeconfig}", "--request-timeout=20s"]

    def _items(self) -> dict[str, list[dict]]:
        """Claims, volumes, Ingresses and Services, by kind, in one kubectl call per round."""
        kinds = "persistentvolumeclaims,persistentvolumes,ingresses.networking.k8s.io,services"
        proc = subprocess.run(
            [*self.base, "get", kinds, "-A", "-o", "json"],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr.strip())
        by_kind: dict[str, list[dict]] = {
            "PersistentVolumeClaim": [],
            "PersistentVolume": [],
            "Ingress": [],
            "Service": [],
        }
        for item in json.loads(proc.stdout)["items"]:
            by_kind.setdefault(item["kind"], []).append(item)
        return by_kind

    def reconcile(self) -> tuple[int, int, int]:
        """One round: (volumes created, volumes deleted, addresses published)."""
        items = self._items()
        claims, volumes = items["PersistentVolumeClaim"], items["PersistentVolume"]
        created = deleted = published = 0
        for claim in pending_claims(claims, volumes):
            proc = subprocess.run(
                [*self.base, "create", "-f", "-"], input=json.dumps(volume_for(claim)), capture_output=True, text=True
            )
            created += proc.returncode == 0
        for volume in released_volumes(claims, volumes):
            proc = subprocess.run(
                [*self.base, "delete", "pv", volume["metadata"]["name"], "--wait=false", "--ignore-not-found"],
                capture_output=True,
                text=True,
            )
            deleted += proc.returncode == 0
        for obj in unaddressed(items["Ingress"] + items["Service"]):
            meta = obj["metadata"]
            proc = subprocess.run(
                [
                    *self.base,
                    "patch",
                    f"{obj['kind'].lower()}/{meta['name']}",
                    "-n",
                    meta["namespace"],
                    "--subresource=status",
                    "--type=merge",
                    "-p",
                    json.dumps({"status": {"loadBalancer": {"ingress": [SIMULATED_ADDRESS]}}}),
                ],
                capture_output=True,
                text=True,
            )
            published += proc.returncode == 0
        return created, deleted, published


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--kubectl", required=True)
    parser.add_argument("--interval", type=float, default=2.0)
    args = parser.parse_args(argv)
    controllers = SimulatedControllers(args.kubectl, args.kubeconfig)
    while True:
        try:
            created, deleted, published = controllers.reconcile()
            if created or deleted or published:
                print(f"volumes created {created}, deleted {deleted}; addresses published {published}", flush=True)
        except (RuntimeError, ValueError) as exc:
            # The apiserver restarting or not up yet: try again on the next round.
            print(f"reconcile failed: {exc}", file=sys.stderr, flush=True)
        time.sleep(args.interval)


if __name__ == "__main__":
    sys.exit(main())
