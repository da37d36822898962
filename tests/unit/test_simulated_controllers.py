"""The simulated plane's stand-in controllers: which claims get volumes, which volumes go,
which objects get a load-balancer address."""

from __future__ import annotations

from mlplatform.cluster.simulated_controllers import (
    VOLUME_LABEL,
    pending_claims,
    released_volumes,
    unaddressed,
    volume_for,
)


def _claim(name: str, uid: str, **spec) -> dict:
    return {
        "metadata": {"name": name, "namespace": "team-a", "uid": uid},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "5Gi"}}, **spec},
        "status": {"phase": "Pending"},
    }


def test_a_pending_claim_gets_a_volume_of_its_size_class_and_modes_bound_to_it():
    claim = _claim("data", "u1", storageClassName="fast", accessModes=["ReadWriteMany"])
    volume = volume_for(claim)
    assert volume["spec"]["capacity"] == {"storage": "5Gi"}
    assert volume["spec"]["storageClassName"] == "fast"
    assert volume["spec"]["accessModes"] == ["ReadWriteMany"]
    assert volume["spec"]["claimRef"] == {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "namespace": "team-a",
        "name": "data",
        "uid": "u1",
    }
    assert volume["spec"]["persistentVolumeReclaimPolicy"] == "Delete"


def test_only_unserved_pending_claims_get_volumes():
    bound = _claim("bound", "u1", volumeName="pv-1")
    served = _claim("served", "u2")
    waiting = _claim("waiting", "u3")
    leaving = _claim("leaving", "u4")
    leaving["metadata"]["deletionTimestamp"] = "2026-12-01T00:00:00Z"
    volumes = [volume_for(served)]
    assert [c["metadata"]["name"] for c in pending_claims([bound, served, waiting, leaving], volumes)] == ["waiting"]


def test_our_volumes_go_with_their_claims_and_nobody_elses_do():
    kept, gone = _claim("kept", "u1"), _claim("gone", "u2")
    foreign = {"metadata": {"name": "nfs", "labels": {}}, "spec": {"claimRef": {"uid": "u9"}}}
    volumes = [volume_for(kept), volume_for(gone), foreign]
    released = released_volumes([kept], volumes)
    assert [v["metadata"]["name"] for v in released] == ["sim-u2"]
    assert all(v["metadata"]["labels"][VOLUME_LABEL] == "true" for v in released)


def test_ingresses_and_load_balancers_without_an_address_get_one():
    def service(name: str, type_: str, addressed: bool = False) -> dict:
        status = {"loadBalancer": {"ingress": [{"ip": "10.0.0.1"}]}} if addressed else {"loadBalancer": {}}
        return {"kind": "Service", "metadata": {"name": name}, "spec": {"type": type_}, "status": status}

    ingress = {"kind": "Ingress", "metadata": {"name": "ui"}, "spec": {}, "status": {}}
    objects = [
        ingress,
        service("lb", "LoadBalancer"),
        service("done", "LoadBalancer", True),
        service("in", "ClusterIP"),
    ]
    assert [o["metadata"]["name"] for o in unaddressed(objects)] == ["ui", "lb"]
