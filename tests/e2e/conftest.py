"""Fixtures for end-to-end runs: every process a test starts is stopped by PID."""

from __future__ import annotations

import os

import psutil
import pytest

WATCHED = (
    "flower-superlink",
    "flower-superexec",
    "flwr-simulation",
    "raylet",
    "gcs_server",
    "flwr-serverapp",
)


def _ours() -> set[int]:
    """PIDs of Flower/Ray processes that descend from this test process."""
    me = psutil.Process(os.getpid())
    return {
        p.pid
        for p in me.children(recursive=True)
        if any(w in " ".join(p.cmdline()) for w in WATCHED)
    }


def flower_ray_processes() -> list[str]:
    """Command lines of Flower/Ray processes running on this machine (any parent)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            cmd = " ".join(proc.info["cmdline"] or [])
        except psutil.Error:
            continue
        if any(w in cmd for w in WATCHED):
            found.append(f"{proc.pid} {cmd[:120]}")
    return found


@pytest.fixture
def no_leftover_processes():
    """Assert a test leaves no Flower/Ray process behind; kill (by PID) any it did."""
    before = set(flower_ray_processes())
    yield
    after = [p for p in flower_ray_processes() if p not in before]
    for line in after:
        try:
            psutil.Process(int(line.split()[0])).kill()
        except psutil.Error:
            pass
    assert after == [], f"processes left running: {after}"
