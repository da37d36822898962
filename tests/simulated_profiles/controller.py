"""Reconciles every Profile on a plane the way upstream's Profile controller does.

python -m tests.simulated_profiles --kubeconfig PATH --kubectl PATH [--interval 1]

Facts (profile_controller.go, v1.10; its Deployment and ConfigMaps in kubeflow/manifests
applications/profiles):
- it reads USERID_HEADER, USERID_PREFIX and the ingress gateway's principal from its container's
  environment (the `profiles-config` ConfigMap, envFrom) and its default namespace labels from
  the file mounted from the `namespace-labels-data` ConfigMap;
- a Profile's namespace is the Profile's name. Missing, it is created with the annotation
  `owner: <spec.owner.name>` and the label `istio-injection: enabled`, plus the default labels.
  Existing, it is adopted only if its `owner` annotation equals spec.owner.name: the controller
  then adds each default label whose key is absent (never replacing a value), removes keys whose
  default is empty, and updates the namespace only if that changed its labels. Otherwise the
  Profile gets a failed condition and nothing else happens;
- in the namespace it keeps an Istio AuthorizationPolicy `ns-owner-access-istio`, the
  ServiceAccounts `default-editor` and `default-viewer` bound (RoleBindings of the same names) to
  kubeflow-edit and kubeflow-view, and the RoleBinding `namespaceAdmin` (annotations user/role)
  of the owner to kubeflow-admin; each is created if missing, a RoleBinding updated only where
  its roleRef or subjects differ, the policy only where its spec differs;
- a ResourceQuota `kf-resource-quota` only when spec.resourceQuotaSpec.hard is not empty;
- every object it creates has the Profile as controller owner; it adds the finalizer
  `profile-finalizer` to the Profile.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from typing import Any

import yaml

PROFILE_NAMESPACE = "kubeflow"
AUTHZ_POLICY = "ns-owner-access-istio"
QUOTA = "kf-resource-quota"
FINALIZER = "profile-finalizer"
OWNER_ANNOTATION = "owner"
ROLE_BINDINGS = {"default-editor": "kubeflow-edit", "default-viewer": "kubeflow-view"}
OWNER_BINDING = ("namespaceAdmin", "kubeflow-admin")
NEW_NAMESPACE_LABELS = {"istio-injection": "enabled"}
# controller-runtime writes as the binary's name: upstream's is /manager.
FIELD_MANAGER = "manager"
AUTHZ_API = "security.istio.io/v1beta1"


def set_namespace_labels(labels: dict[str, str], defaults: dict[str, str]) -> dict[str, str]:
    """Upstream's setNamespaceLabels: add absent keys, never replace, drop empty-valued ones."""
    result = dict(labels)
    for key, value in defaults.items():
        if not value:
            result.pop(key, None)
        elif key not in result:
            result[key] = value
    return result


class ProfileController:
    def __init__(self, kubectl: str, kubeconfig: str) -> None:
        self.base = [kubectl, f"--kubeconfig={kubeconfig}", "--request-timeout=20s"]

    def _run(self, *args: str, input_text: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run([*self.base, *args], input=input_text, capture_output=True, text=True)
        if check and proc.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)}: {proc.stderr.strip()}")
        return proc

    def _get(self, *args: str) -> dict[str, Any] | None:
        proc = self._run("get", *args, "-o", "json", check=False)
        if proc.returncode != 0:
            if "NotFound" in proc.stderr or "not found" in proc.stderr:
                return None
            raise RuntimeError(proc.stderr.strip())
        return json.loads(proc.stdout)

    def _create(self, manifest: dict[str, Any]) -> None:
        self._run("create", f"--field-manager={FIELD_MANAGER}", "-f", "-", input_text=json.dumps(manifest))

    def _update(self, manifest: dict[str, Any]) -> None:
        self._run("replace", f"--field-manager={FIELD_MANAGER}", "-f", "-", input_text=json.dumps(manifest))

    def settings(self) -> tuple[dict[str, str], dict[str, str]]:
        """(the manager container's environment, the default namespace labels), as the
        running controller would see them."""
        deployments = self._get("deployments", "-n", PROFILE_NAMESPACE)
        for deployment in (deployments or {}).get("items", []):
            spec = deployment["spec"]["template"]["spec"]
            manager = next((c for c in spec["containers"] if c["name"] == "manager"), None)
            if manager is None or not any("/manager" in part for part in manager.get("command") or []):
                continue
            env: dict[str, str] = {}
            for source in manager.get("envFrom") or []:
                name = (source.get("configMapRef") or {}).get("name")
                if name:
                    env.update((self._get("configmap", name, "-n", PROFILE_NAMESPACE) or {}).get("data") or {})
            for each in manager.get("env") or []:
                if "value" in each:
                    env[each["name"]] = each["value"]
            labels: dict[str, str] = {}
            for volume in spec.get("volumes") or []:
                name = (volume.get("configMap") or {}).get("name")
                data = (self._get("configmap", name, "-n", PROFILE_NAMESPACE) or {}).get("data") or {} if name else {}
                for text in data.values():
                    parsed = yaml.safe_load(text) or {}
                    labels.update({str(k): "" if v is None else str(v) for k, v in parsed.items()})
            return env, labels
        raise RuntimeError("no Profile controller Deployment in kubeflow")

    def stop(self) -> None:
        """The controller leaves: upstream's removes its finalizer from a Profile once the
        Profile is deleted and its cleanup done; no stand-in runs after a test, so it lets go of
        every Profile now (its objects carry owner references: the garbage collector removes
        them with the Profile)."""
        for profile in (self._get("profiles.kubeflow.org") or {}).get("items", []):
            finalizers = profile["metadata"].get("finalizers") or []
            if FINALIZER in finalizers:
                current = self._get("profile.kubeflow.org", profile["metadata"]["name"])
                current["metadata"]["finalizers"] = [f for f in finalizers if f != FINALIZER]
                self._update(current)

    def reconcile_all(self) -> list[str]:
        """One round over every Profile; a line per change made (empty: nothing to do)."""
        profiles = (self._get("profiles.kubeflow.org") or {}).get("items", [])
        if not profiles:
            return []
        env, defaults = self.settings()
        changes: list[str] = []
        for profile in profiles:
            changes += self.reconcile(profile, env, defaults)
        return changes

    def reconcile(self, profile: dict[str, Any], env: dict[str, str], defaults: dict[str, str]) -> list[str]:
        name = profile["metadata"]["name"]
        owner = profile["spec"]["owner"]
        changes: list[str] = []
        owned_by = [
            {
                "apiVersion": profile["apiVersion"],
                "kind": "Profile",
                "name": name,
                "uid": profile["metadata"]["uid"],
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
        namespace = self._get("namespace", name)
        if namespace is None:
            labels = set_namespace_labels(NEW_NAMESPACE_LABELS, defaults)
            self._create(
                {
                    "apiVersion": "v1",
                    "kind": "Namespace",
                    "metadata": {
                        "name": name,
                        "annotations": {OWNER_ANNOTATION: owner["name"]},
                        "labels": labels,
                        "ownerReferences": owned_by,
                    },
                }
            )
            changes.append(f"namespace {name}: created")
        elif (namespace["metadata"].get("annotations") or {}).get(OWNER_ANNOTATION) != owner["name"]:
            return [f"profile {name}: refused, namespace exists but is not owned by {owner['name']}"]
        else:
            old = namespace["metadata"].get("labels") or {}
            new = set_namespace_labels(old, defaults)
            if new != old:
                namespace["metadata"]["labels"] = new
                self._update(namespace)
                changes.append(f"namespace {name}: labels {sorted(set(new.items()) ^ set(old.items()))}")

        changes += self._authorization_policy(name, owner["name"], env, owned_by)
        for account, role in ROLE_BINDINGS.items():
            if self._get("serviceaccount", account, "-n", name) is None:
                self._create(
                    {
                        "apiVersion": "v1",
                        "kind": "ServiceAccount",
                        "metadata": {"name": account, "namespace": name, "ownerReferences": owned_by},
                    }
                )
                changes.append(f"{name}: serviceaccount {account} created")
            subject = {"kind": "ServiceAccount", "name": account, "namespace": name}
            changes += self._role_binding(name, account, role, [subject], {}, owned_by)
        admin_subject = {k: owner[k] for k in ("apiGroup", "kind", "name", "namespace") if k in owner}
        changes += self._role_binding(
            name,
            OWNER_BINDING[0],
            OWNER_BINDING[1],
            [admin_subject],
            {"user": owner["name"], "role": "admin"},
            owned_by,
        )
        hard = ((profile["spec"].get("resourceQuotaSpec") or {}).get("hard")) or {}
        if hard:
            changes += self._quota(name, profile["spec"]["resourceQuotaSpec"], owned_by)

        if FINALIZER not in (profile["metadata"].get("finalizers") or []):
            current = self._get("profile.kubeflow.org", name)
            current["metadata"]["finalizers"] = [*(current["metadata"].get("finalizers") or []), FINALIZER]
            self._update(current)
            changes.append(f"profile {name}: finalizer added")
        return changes

    def _authorization_policy(
        self, namespace: str, owner: str, env: dict[str, str], owned_by: list[dict[str, Any]]
    ) -> list[str]:
        if self._get("crd", "authorizationpolicies.security.istio.io") is None:
            return []
        header = env.get("USERID_HEADER", "")
        spec = {
            "action": "ALLOW",
            "rules": [
                # The owner, through the ingress gateway, with the user header the gateway sets.
                {
                    "from": [{"source": {"principals": [env.get("ISTIO_INGRESS_GATEWAY_PRINCIPAL", "")]}}],
                    "when": [{"key": f"request.headers[{header}]", "values": [env.get("USERID_PREFIX", "") + owner]}],
                },
                # Workloads of the namespace reach each other.
                {"when": [{"key": "source.namespace", "values": [namespace]}]},
                # Knative's probes.
                {"to": [{"operation": {"paths": ["/healthz", "/metrics", "/wait-for-drain"]}}]},
            ],
        }
        found = self._get("authorizationpolicies.security.istio.io", AUTHZ_POLICY, "-n", namespace)
        if found is None:
            self._create(
                {
                    "apiVersion": AUTHZ_API,
                    "kind": "AuthorizationPolicy",
                    "metadata": {
                        "name": AUTHZ_POLICY,
                        "namespace": namespace,
                        "annotations": {"user": owner, "role": "admin"},
                        "ownerReferences": owned_by,
                    },
                    "spec": spec,
                }
            )
            return [f"{namespace}: authorizationpolicy {AUTHZ_POLICY} created"]
        if found.get("spec") != spec:
            found["spec"] = spec
            self._update(found)
            return [f"{namespace}: authorizationpolicy {AUTHZ_POLICY} updated"]
        return []

    def _role_binding(
        self,
        namespace: str,
        name: str,
        role: str,
        subjects: list[dict[str, Any]],
        annotations: dict[str, str],
        owned_by: list[dict[str, Any]],
    ) -> list[str]:
        role_ref = {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role}
        found = self._get("rolebinding", name, "-n", namespace)
        if found is None:
            metadata: dict[str, Any] = {"name": name, "namespace": namespace, "ownerReferences": owned_by}
            if annotations:
                metadata["annotations"] = annotations
            self._create(
                {
                    "apiVersion": "rbac.authorization.k8s.io/v1",
                    "kind": "RoleBinding",
                    "metadata": metadata,
                    "roleRef": role_ref,
                    "subjects": subjects,
                }
            )
            return [f"{namespace}: rolebinding {name} created"]
        if found.get("roleRef") != role_ref or found.get("subjects") != subjects:
            found["roleRef"], found["subjects"] = role_ref, subjects
            self._update(found)
            return [f"{namespace}: rolebinding {name} updated"]
        return []

    def _quota(self, namespace: str, spec: dict[str, Any], owned_by: list[dict[str, Any]]) -> list[str]:
        found = self._get("resourcequota", QUOTA, "-n", namespace)
        if found is None:
            self._create(
                {
                    "apiVersion": "v1",
                    "kind": "ResourceQuota",
                    "metadata": {"name": QUOTA, "namespace": namespace, "ownerReferences": owned_by},
                    "spec": spec,
                }
            )
            return [f"{namespace}: resourcequota {QUOTA} created"]
        if found.get("spec") != spec:
            found["spec"] = spec
            self._update(found)
            return [f"{namespace}: resourcequota {QUOTA} updated"]
        return []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.simulated_profiles")
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--kubectl", default="kubectl")
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--once", action="store_true", help="one round, then exit")
    args = parser.parse_args(argv)
    controller = ProfileController(args.kubectl, args.kubeconfig)
    while True:
        try:
            for line in controller.reconcile_all():
                print(line, flush=True)
        except RuntimeError as exc:  # the plane restarting, a CRD not served yet: next round
            print(f"error: {exc}", file=sys.stderr, flush=True)
        if args.once:
            return 0
        time.sleep(args.interval)
