"""The plane's ports: outside the kernel's ephemeral range, and a taken one fails by name."""

from __future__ import annotations

import socket

import pytest

from mlplatform.cluster import plane
from tests.e2e.conftest import E2E_PORT_BASE, STACK_PORT_OFFSETS
from tests.engine.test_pulumi_lifecycle import PORT_OFFSETS as ENGINE_PORT_OFFSETS

# Linux's default net.ipv4.ip_local_port_range starts here; outbound connections take ports
# from there up, so a fixed listener above it can find its port held.
EPHEMERAL_START = 32768


def _ports(base: int) -> plane.Ports:
    return plane.Ports(base + 379, base + 380, base + 443, base + 257, base + 259, base + 247)


def test_default_ports_follow_the_base(monkeypatch):
    monkeypatch.delenv("MLPLATFORM_CLUSTER_PORT_BASE", raising=False)
    assert plane.Ports.from_env() == _ports(plane.DEFAULT_PORT_BASE)
    monkeypatch.setenv("MLPLATFORM_CLUSTER_PORT_BASE", "20000")
    assert plane.Ports.from_env().apiserver == 20443


def test_every_plane_of_the_tests_sits_below_the_ephemeral_range():
    offsets = [0, 100, 300, *STACK_PORT_OFFSETS.values(), *ENGINE_PORT_OFFSETS.values()]
    highest = max(max(vars(_ports(E2E_PORT_BASE + offset)).values()) for offset in offsets)
    assert highest < EPHEMERAL_START, highest
    assert max(vars(_ports(plane.DEFAULT_PORT_BASE)).values()) < EPHEMERAL_START


def test_a_port_held_by_a_listener_is_taken_and_free_once_closed():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert plane.port_taken(port)
    assert not plane.port_taken(port)


def test_a_component_whose_port_is_taken_fails_by_name_and_starts_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(plane, "cluster_dir", lambda: tmp_path)
    monkeypatch.setenv("MLPLATFORM_CLUSTER_PORT_BASE", "20000")
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with pytest.raises(plane.ClusterError) as error:
            plane._start("etcd", ["--name=x"], command=["false"], ports=(port,))
    message = str(error.value)
    assert f"127.0.0.1:{port} is taken" in message
    assert "etcd cannot start" in message
    assert "MLPLATFORM_CLUSTER_PORT_BASE (now 20000" in message
    assert not (tmp_path / "run" / "etcd.pid").exists()
    assert not (tmp_path / "logs").exists()
