"""Upstream CRDs go in without their field descriptions unless the stack keeps them: the
engine stores each CRD three times in the state it rewrites after every step."""

from __future__ import annotations

import copy
import json

import pytest

from mlplatform.config.load import read_stack_file
from mlplatform.modules.base import _drop_descriptions
from tests.conftest import REPO_ROOT, STACKS, render_shared, without_helm_keep


def _descriptions(schema) -> int:
    """Description strings in a schema, counted the way `_drop_descriptions` walks it."""
    copied = copy.deepcopy(schema)
    _drop_descriptions(copied)
    return json.dumps(schema).count('"description"') - json.dumps(copied).count('"description"')


def _crds(manifests):
    return {m["metadata"]["name"]: m for m in manifests if m["kind"] == "CustomResourceDefinition"}


def test_only_descriptions_go_fields_and_data_named_description_stay():
    schema = {
        "description": "A thing.",
        "type": "object",
        "properties": {
            # A field called "description", itself with a description.
            "description": {"type": "string", "description": "Free text."},
            "spec": {
                "type": "object",
                "description": "Spec.",
                "default": {"description": "data, not documentation"},
                "additionalProperties": {"type": "string", "description": "A value."},
                "properties": {
                    "list": {"type": "array", "items": {"type": "object", "description": "An item."}},
                    "either": {"anyOf": [{"type": "integer", "description": "n"}, {"type": "string"}]},
                    "closed": {"type": "object", "additionalProperties": False},
                },
            },
        },
    }
    _drop_descriptions(schema)
    assert schema == {
        "type": "object",
        "properties": {
            "description": {"type": "string"},
            "spec": {
                "type": "object",
                "default": {"description": "data, not documentation"},
                "additionalProperties": {"type": "string"},
                "properties": {
                    "list": {"type": "array", "items": {"type": "object"}},
                    "either": {"anyOf": [{"type": "integer"}, {"type": "string"}]},
                    "closed": {"type": "object", "additionalProperties": False},
                },
            },
        },
    }


@pytest.mark.slow
@pytest.mark.parametrize("stack", STACKS)
def test_stacks_install_crds_without_descriptions_by_default(mirror, monkeypatch, stack):
    monkeypatch.setenv("MLPLATFORM_MIRROR", str(mirror))
    dropped = _crds(render_shared(stack))
    config = read_stack_file(REPO_ROOT / "stacks" / f"Pulumi.{stack}.yaml")
    config.setdefault("mlplatform:platform", {})["crdDescriptions"] = "keep"
    config["mlplatform:platform"]["crdInstall"] = "objects"
    kept = _crds(render_shared(stack, config))

    assert dropped and dropped.keys() == kept.keys(), stack
    kept_total = 0
    for name, crd in dropped.items():
        for version, upstream in zip(crd["spec"]["versions"], kept[name]["spec"]["versions"], strict=True):
            assert _descriptions(version["schema"]["openAPIV3Schema"]) == 0, f"{stack}: {name} {version['name']}"
            kept_total += _descriptions(upstream["schema"]["openAPIV3Schema"])
        # Everything else of the CRD is upstream's: names, versions, printer columns, labels
        # (but for Helm's keep annotation, which a release's copies go without).
        assert {k: v for k, v in crd.items() if k != "spec"} == {
            k: v for k, v in without_helm_keep(kept[name]).items() if k != "spec"
        }
        assert [v["name"] for v in crd["spec"]["versions"]] == [v["name"] for v in kept[name]["spec"]["versions"]]
    assert kept_total > 1000, f"{stack}: the kept CRDs carry upstream's descriptions"
    assert len(json.dumps(list(dropped.values()))) < 0.7 * len(json.dumps(list(kept.values()))), stack


def test_an_unknown_crd_descriptions_value_is_refused_with_the_allowed_ones():
    from mlplatform.config import ConfigError
    from mlplatform.validation import resolve

    raw = read_stack_file(REPO_ROOT / "stacks" / "Pulumi.lab.yaml")
    raw.setdefault("mlplatform:platform", {})["crdDescriptions"] = "strip"
    with pytest.raises(ConfigError) as raised:
        resolve(raw, source="stacks/Pulumi.lab.yaml", stack="lab")
    message = str(raised.value)
    assert "stacks/Pulumi.lab.yaml" in message and "platform.crdDescriptions" in message, message
    assert "'strip'" in message and "'drop'" in message and "'keep'" in message, message
