"""Fixtures for end-to-end runs: every process a test starts is stopped by PID.

Each test's commands run with ``FEDDISTILL_TEST_TAG`` set to a fresh value; every
process they start (SuperLink, SuperExec, flwr-simulation, Ray's daemons and workers)
inherits it, so processes left behind are found by that tag, not by name: other
Flower or Ray jobs on the same machine are never touched.
"""

from __future__ import annotations

import os
import uuid

import psutil
import pytest

TAG = "FEDDISTILL_TEST_TAG"


def tagged_processes(tag: str) -> list[psutil.Process]:
    """Running processes whose environment carries ``FEDDISTILL_TEST_TAG=tag``."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.pid != os.getpid() and proc.environ().get(TAG) == tag:
                if proc.status() != psutil.STATUS_ZOMBIE:
                    found.append(proc)
        except psutil.Error:
            continue
    return found


@pytest.fixture
def test_env():
    """Environment for a test's subprocesses; after the test, none of them may be running."""
    tag = uuid.uuid4().hex
    env = {**os.environ, TAG: tag}
    yield env
    left = tagged_processes(tag)
    names = [f"{p.pid} {' '.join(p.cmdline())[:100]}" for p in left]
    for proc in left:
        try:
            proc.kill()
        except psutil.Error:
            pass
    assert names == [], f"processes left running: {names}"
