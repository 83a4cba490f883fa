"""Stopped runs: SIGTERM, then `kill -9` mid-round, leave no process; resume works each time.

One small job (digits, 2 clients, mlp models, 6 rounds), as in test_e2e_run.py.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from feddistill.outdir_lock import OutDirLock, OutDirLocked

pytestmark = pytest.mark.slow

TAG = "FEDDISTILL_TEST_TAG"  # set by the `test_env` fixture, inherited by every process
SMALL = [
    'dataset="digits"',
    "num-partitions=2",
    "num-server-rounds=6",
    "min-partition-size=5",
    'teacher-models="mlp"',
    'student-model="mlp"',
    "batch-size=64",
]
ARGS = [arg for pair in SMALL for arg in ("--set", pair)]


def feddistill(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "feddistill.cli", *args],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )


def rows(out: Path) -> list[dict[str, str]]:
    with (out / "metrics.csv").open() as fh:
        return list(csv.DictReader(fh))


def without_timing(table: list[dict[str, str]]) -> list[dict[str, str]]:
    return [
        {k: v for k, v in r.items() if k not in ("round_seconds", "wall_seconds")} for r in table
    ]


def run_processes(tag: str) -> list[psutil.Process]:
    """Running processes (not zombies) started under the test's tag, this one aside."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.pid != os.getpid() and proc.environ().get(TAG) == tag:
                if proc.status() != psutil.STATUS_ZOMBIE:
                    found.append(proc)
        except psutil.Error:
            continue
    return found


def wait_for_rows(path: Path, count: int, proc: subprocess.Popen, timeout_s: float) -> None:
    """Wait until ``metrics.jsonl`` at `path` holds `count` rows (or `proc` ended)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        if path.is_file() and len(path.read_text().splitlines()) >= count:
            return
        time.sleep(0.1)


def test_sigterm_then_sigkill_mid_run_leave_no_process_and_resume_matches_an_uninterrupted_run(
    tmp_path, test_env
):
    """One run is stopped twice, the ways a run ends early; each time it resumes.

    SIGTERM once round 1 is checkpointed (exit 143), ``--resume``; then SIGKILL of the
    resumed run mid-round (nothing left 10 s later, the lock refused a second writer
    while it lived), ``--resume`` again (in process): the metrics are the uninterrupted
    run's. (Two tests before, with a start-up each: the SIGTERM one was in
    test_e2e_run.py.)
    """
    # Prepare: the uninterrupted reference run, in process (both engines give the same
    # metrics: tests/e2e/test_e2e_run.py)
    ref, part = tmp_path / "ref", tmp_path / "part"
    reference = feddistill(
        "run", "--engine", "inprocess", "--out", str(ref), "--quiet", *ARGS, env=test_env
    )
    assert reference.returncode == 0, reference.stdout + reference.stderr
    run_args = [sys.executable, "-m", "feddistill.cli", "run", "--out", str(part), "--quiet"]
    quiet = {"env": test_env, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    # Execute 1: SIGTERM once round 1 is checkpointed
    first = subprocess.Popen([*run_args, *ARGS], **quiet)
    latest = part / "checkpoints" / "latest"
    deadline = time.monotonic() + 400
    while not latest.is_file() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    first.send_signal(signal.SIGTERM)
    sigterm_code = first.wait(timeout=120)
    done_at_sigterm = len(rows(part))
    # Execute 2: resume; SIGKILL once it has written a round of its own (mid-round)
    top = subprocess.Popen(
        [sys.executable, "-m", "feddistill.cli", "run", "--resume", str(part), "--quiet"], **quiet
    )
    wait_for_rows(part / "metrics.jsonl", done_at_sigterm + 1, top, timeout_s=400)
    during = run_processes(test_env[TAG])
    homes = {p.environ().get("FLWR_HOME") for p in during} - {None}
    try:  # a second writer (`--resume`, `flwr run`) is refused while the run lives
        OutDirLock(part).check_free()
        refusal = ""
    except OutDirLocked as exc:
        refusal = str(exc)
    top.kill()
    top.wait()
    done_at_sigkill = len(rows(part))
    deadline = time.monotonic() + 10  # every process dies within 10 s (README, "Hard kills")
    while time.monotonic() < deadline and (
        run_processes(test_env[TAG]) or [h for h in homes if Path(h).exists()]
    ):
        time.sleep(0.2)
    left = [f"{p.pid} {' '.join(p.cmdline())[:100]}" for p in run_processes(test_env[TAG])]
    homes_left = [h for h in homes if Path(h).exists()]
    # Execute 3: resume to the end, in process (the checkpoint a `kill -9` left is what
    # is tested here; resuming on the simulation engine was Execute 2; one start-up less)
    resumed = feddistill(
        "run", "--resume", str(part), "--engine", "inprocess", "--quiet", env=test_env
    )
    # Assert
    assert sigterm_code == 143
    assert 1 <= done_at_sigterm < done_at_sigkill < 6
    assert len(during) >= 10  # CLI, watchdog, SuperLink, SuperExec, flwr, simulation, Ray...
    assert f"in use by a live run (PID {top.pid}," in refusal
    assert left == []
    assert homes and homes_left == []
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert without_timing(rows(part)) == without_timing(rows(ref))
