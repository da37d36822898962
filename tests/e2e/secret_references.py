"""The Secrets a GitOps secret tool would make from an export's references (OUT/secrets: one
External Secrets `ExternalSecret` per Secret the stack fills from its secrets), with test values.
The simulated plane runs no External Secrets Operator: the tests apply these in its place.

`python -m tests.e2e.secret_references OUT` prints them as YAML (a kind cluster in CI applies them).
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from pathlib import Path

import bcrypt
import yaml

# The template forms the export writes (mlplatform.render._template), evaluated as ESO's engine would.
_ESCAPED_BRACES = re.compile(r'\{\{ "\{\{" \}\}')
_VALUE = re.compile(r'\{\{ \(index \. "([^"]+)"\) \}\}')
_SHA256 = re.compile(r'\{\{ print ("(?:[^"\\]|\\.)*") \(index \. "([^"]+)"\) \| sha256sum \}\}')
_BCRYPT = re.compile(r'\{\{ \(index \. "([^"]+)"\) \| bcrypt \}\}')


def stand_in_value(remote_key: str) -> str:
    """A value per stack secret, the same wherever it is referenced; never an upstream default."""
    return "e2e-" + hashlib.sha256(remote_key.encode()).hexdigest()[:24]


def _evaluate(template: str, fetched: dict[str, str]) -> str:
    # Sprig's bcrypt salts at random: any salt stands in for it.
    text = _BCRYPT.sub(lambda m: bcrypt.hashpw(fetched[m[1]].encode(), bcrypt.gensalt()).decode(), template)
    text = _SHA256.sub(lambda m: hashlib.sha256((json.loads(m[1]) + fetched[m[2]]).encode()).hexdigest(), text)
    text = _VALUE.sub(lambda m: fetched[m[1]], text)
    if "{{ " in _ESCAPED_BRACES.sub("", text):
        raise ValueError(f"a template the test stand-in does not evaluate: {template!r}")
    return _ESCAPED_BRACES.sub("{{", text)


def secret_from_reference(reference: dict) -> dict:
    spec = reference["spec"]
    fetched = {entry["secretKey"]: stand_in_value(entry["remoteRef"]["key"]) for entry in spec.get("data") or []}
    template = spec["target"].get("template") or {}
    # Replace: the Secret holds the template's keys alone (a value fetched only to be hashed stays out).
    values = {} if template.get("mergePolicy") == "Replace" else dict(fetched)
    values.update({key: _evaluate(text, fetched) for key, text in (template.get("data") or {}).items()})
    metadata = {"name": spec["target"]["name"], "namespace": reference["metadata"]["namespace"]}
    metadata.update({k: v for k, v in (template.get("metadata") or {}).items() if v})
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata,
        "type": template.get("type", "Opaque"),
        "stringData": values,
    }


def secrets_from_references(out: Path) -> list[dict]:
    """The Secrets for every ExternalSecret under OUT/secrets (none where the folder is absent)."""
    secrets = []
    for path in sorted((out / "secrets").glob("*.yaml")):
        document = yaml.safe_load(path.read_text())
        if document.get("kind") == "ExternalSecret":
            secrets.append(secret_from_reference(document))
    return secrets


if __name__ == "__main__":
    print(yaml.safe_dump_all(secrets_from_references(Path(sys.argv[1])), sort_keys=False), end="")
