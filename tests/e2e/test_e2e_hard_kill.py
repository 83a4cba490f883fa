"""Hard kill: `kill -9` of `feddistill run` mid-round leaves no process, and resume works.

One small job (digits, 2 clients, mlp models, 6 rounds), as in test_e2e_run.py.
"""

from __future__ import annotations

import csv
import os
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


def test_sigkill_mid_round_leaves_no_process_and_resume_matches_an_uninterrupted_run(
    tmp_path, test_env
):
    # Prepare: the uninterrupted reference run, in process (both engines give the same
    # metrics: tests/e2e/test_e2e_run.py)
    ref, part = tmp_path / "ref", tmp_path / "part"
    reference = feddistill(
        "run", "--engine", "inprocess", "--out", str(ref), "--quiet", *ARGS, env=test_env
    )
    assert reference.returncode == 0, reference.stdout + reference.stderr
    # Execute: the same job, killed with SIGKILL once round 2 is written (mid-round 3 of 6)
    top = subprocess.Popen(
        [sys.executable, "-m", "feddistill.cli", "run", "--out", str(part), "--quiet", *ARGS],
        env=test_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    metrics = part / "metrics.jsonl"
    deadline = time.monotonic() + 400
    while time.monotonic() < deadline and top.poll() is None:
        if metrics.is_file() and len(metrics.read_text().splitlines()) >= 2:
            break
        time.sleep(0.1)
    during = run_processes(test_env[TAG])
    homes = {p.environ().get("FLWR_HOME") for p in during} - {None}
    try:  # a second writer (`--resume`, `flwr run`) is refused while the run lives
        OutDirLock(part).check_free()
        refusal = ""
    except OutDirLocked as exc:
        refusal = str(exc)
    top.kill()
    top.wait()
    rounds_done = len(rows(part))
    time.sleep(10)
    left = [f"{p.pid} {' '.join(p.cmdline())[:100]}" for p in run_processes(test_env[TAG])]
    resumed = feddistill("run", "--resume", str(part), "--quiet", env=test_env)
    # Assert
    assert len(during) >= 10  # CLI, watchdog, SuperLink, SuperExec, flwr, simulation, Ray...
    assert f"in use by a live run (PID {top.pid}," in refusal
    assert 2 <= rounds_done < 6
    assert left == []
    assert homes and not [h for h in homes if Path(h).exists()]
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert without_timing(rows(part)) == without_timing(rows(ref))
