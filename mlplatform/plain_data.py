"""Copies of plain data: the dicts, lists and scalars that YAML and JSON give."""

from __future__ import annotations

from typing import Any


def plain_copy(value: Any) -> Any:
    """A copy of nested dicts and lists; anything else is shared, as it is immutable here
    (strings, numbers, booleans, None). About three times as fast as `copy.deepcopy`, which
    keeps a memo for cycles and shared objects that parsed manifests never have."""
    if type(value) is dict:
        return {key: plain_copy(item) for key, item in value.items()}
    if type(value) is list:
        return [plain_copy(item) for item in value]
    return value
