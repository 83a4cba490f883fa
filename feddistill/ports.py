"""Free TCP ports on loopback, for processes this machine starts (Ray nodes, SuperLinks)."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_port_range(size: int, tries: int = 50) -> int:
    """First port of `size` consecutive ports that were free a moment ago.

    Raises:
        RuntimeError: if no such range is found in `tries` attempts.
    """
    for _ in range(tries):
        start = free_port()
        if start + size > 65535:
            continue
        socks = []
        try:
            for port in range(start, start + size):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                socks.append(sock)
                sock.bind(("127.0.0.1", port))
            return start
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise RuntimeError(f"found no {size} consecutive free ports in {tries} tries")


def listening(host: str, port: int) -> bool:
    """Whether something accepts TCP connections at `host`:`port` (1 s timeout)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        return sock.connect_ex((host, port)) == 0
