"""Choosing ports for local brokers."""

from __future__ import annotations

import socket

import pytest

from pipeline import broker
from pipeline.broker import LISTEN_PORTS_FROM, free_port


def test_ports_are_below_the_range_the_kernel_gives_client_sockets() -> None:
    first_ephemeral = broker._first_ephemeral_port()
    ports = [free_port() for _ in range(200)]
    assert all(LISTEN_PORTS_FROM <= port < first_ephemeral for port in ports)
    assert len(set(ports)) == len(ports)


def test_a_port_something_listens_on_is_not_returned(monkeypatch: pytest.MonkeyPatch) -> None:
    busy, free = free_port(), free_port()
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", busy))
        listener.listen()
        broker._given.discard(busy)  # as if another process had chosen it
        choices = iter([busy, free])
        monkeypatch.setattr(broker.random, "randrange", lambda *_: next(choices))
        broker._given.discard(free)
        assert free_port() == free
