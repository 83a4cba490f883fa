"""Free loopback ports for the processes a run starts."""

from __future__ import annotations

import socket

import pytest

from feddistill import ports


def test_free_port_range_gives_consecutive_bindable_ports():
    # Execute
    start = ports.free_port_range(5)

    # Assert: all five can be bound right now
    socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(5)]
    try:
        for offset, sock in enumerate(socks):
            sock.bind(("127.0.0.1", start + offset))
    finally:
        for sock in socks:
            sock.close()


def test_no_free_port_range_is_a_clear_error(monkeypatch):
    # Prepare: every candidate start leaves no room below 65535
    monkeypatch.setattr(ports, "free_port", lambda: 65535)

    # Execute / Assert
    with pytest.raises(RuntimeError, match="found no 5 consecutive free ports in 3 tries"):
        ports.free_port_range(5, tries=3)


def test_listening_sees_a_listening_socket_only():
    # Prepare
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]

        # Execute / Assert
        assert ports.listening("127.0.0.1", port)
    assert not ports.listening("127.0.0.1", port)
