"""Engine tests drive the real Pulumi CLI; they run through `make test-engine`."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items):
    for item in items:
        if "/engine/" in str(item.fspath):
            item.add_marker(pytest.mark.engine)
