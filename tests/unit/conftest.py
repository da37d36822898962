import pytest


@pytest.fixture(autouse=True)
def _no_mirror_override(monkeypatch):
    """Unit tests see the stack files alone: CI's MLPLATFORM_MIRROR would override mirror.path."""
    monkeypatch.delenv("MLPLATFORM_MIRROR", raising=False)
