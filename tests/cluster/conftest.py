"""Fixtures for cluster tests: every Ray process a test starts is stopped by PID.

Other jobs may run Ray or Flower on the same machine, so "ours" means: a descendant of
this test process, or a process whose command line or working folder contains one of
the test's markers (its tmp_path, a cluster's temp root), or a PID the test recorded.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field

import psutil
import pytest

WATCHED = (
    "raylet",
    "gcs_server",
    "ray start",
    "ray::",
    "default_worker.py",
    "flower-superlink",
    "flower-superexec",
    "flwr-simulation",
)


@dataclass
class Started:
    """What a test started: folder markers and PIDs to check at teardown."""

    markers: list[str] = field(default_factory=list)
    pids: set[int] = field(default_factory=set)

    def ours(self) -> dict[int, str]:
        """PID -> command line of every live process that belongs to this test."""
        found: dict[int, str] = {}
        me = psutil.Process(os.getpid())
        for proc in me.children(recursive=True):
            try:
                cmd = " ".join(proc.cmdline())
            except psutil.Error:
                continue
            if any(w in cmd for w in WATCHED):
                found[proc.pid] = cmd[:160]
        for proc in psutil.process_iter(["cmdline", "cwd"]):
            try:
                cmd = " ".join(proc.info["cmdline"] or [])
                cwd = proc.info["cwd"] or ""
                if proc.status() == psutil.STATUS_ZOMBIE or proc.pid == me.pid:
                    continue
            except psutil.Error:
                continue
            if proc.pid in self.pids or any(m in cmd or m in cwd for m in self.markers):
                found[proc.pid] = cmd[:160]
        return found


@pytest.fixture
def no_leftover_processes(tmp_path):
    """Assert a test leaves no Ray/Flower process behind; kill (by PID) any it did.

    Yields a :class:`Started`; add a cluster's root to ``markers`` and its PIDs to
    ``pids``. The test's ``tmp_path`` is a marker from the start.
    """
    started = Started(markers=[str(tmp_path)])
    yield started
    left = started.ours()
    for pid in left:
        try:
            psutil.Process(pid).kill()
        except psutil.Error:
            pass
    assert left == {}, f"processes left running: {left}"


@pytest.fixture(scope="module")
def local_ray():
    """A private single-node Ray instance in this process; always shut down.

    It declares 2 CPUs and 1 logical GPU (Ray schedules on declared resources; no
    physical GPU is touched), so GPU-reserving tasks can be tested on a CPU machine.
    Its session lives in a fresh short folder, not the machine-wide /tmp/ray, whose
    ``ray_current_cluster`` file other Ray jobs (a parallel test worker) may write; the
    folder is removed afterwards.
    """
    ray = pytest.importorskip("ray")
    root = tempfile.mkdtemp(prefix="fdr-", dir="/tmp")  # short: Ray's socket paths
    ray.init(
        num_cpus=2,
        num_gpus=1,
        include_dashboard=False,
        logging_level="ERROR",
        log_to_driver=False,
        _temp_dir=root,
    )
    try:
        yield ray
    finally:
        ray.shutdown()
        shutil.rmtree(root, ignore_errors=True)
