"""What a `kill -9` of `feddistill run` leaves behind: processes and temporary folders.

Starts a small job (digits, 2 clients, mlp models, 6 rounds) as a user would, lists
every process the run started once round 2 is written (they all inherit a fresh
``FEDDISTILL_TEST_TAG``), sends SIGKILL to the top ``feddistill`` process, waits 10 s
and counts the run's processes and temporary folders (``FLWR_HOME``) still there.
Anything left is then killed by PID.

    python -m feddistill.benchmarks.hard_kill [--engine simulation|deployment] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psutil

TAG = "FEDDISTILL_TEST_TAG"
SMALL = [
    'dataset="digits"',
    "num-partitions=2",
    "num-server-rounds=6",
    "min-partition-size=5",
    'teacher-models="mlp"',
    'student-model="mlp"',
    "batch-size=64",
]


def tagged(tag: str) -> list[psutil.Process]:
    """Running processes (not zombies) whose environment carries ``TAG=tag``."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get(TAG) == tag and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except psutil.Error:
            continue
    return found


def describe(proc: psutil.Process) -> str:
    """``pid ppid sid command`` of one process."""
    try:
        cmd = " ".join(proc.cmdline())[:90]
        return f"{proc.pid:>7} {proc.ppid():>7} {os.getsid(proc.pid):>7} {cmd}"
    except (psutil.Error, OSError):
        return f"{proc.pid:>7} (gone)"


def measure(engine: str, out: Path, rows_before_kill: int = 2) -> dict:
    """Run, kill -9 after `rows_before_kill` rounds, count what is left 10 s later."""
    tag = uuid.uuid4().hex
    shutil.rmtree(out, ignore_errors=True)
    args = [sys.executable, "-m", "feddistill.cli", "run", "--out", str(out), "--quiet"]
    args += ["--engine", engine] + [arg for pair in SMALL for arg in ("--set", pair)]
    top = subprocess.Popen(
        args, env={**os.environ, TAG: tag}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    metrics = out / "metrics.jsonl"
    while top.poll() is None:
        if metrics.is_file() and len(metrics.read_text().splitlines()) >= rows_before_kill:
            break
        time.sleep(0.1)
    during = tagged(tag)
    table = [describe(p) for p in during]
    homes = sorted({p.environ().get("FLWR_HOME", "") for p in during} - {""})
    top.kill()
    top.wait()
    time.sleep(10)
    left = tagged(tag)
    result = {
        "engine": engine,
        "rounds_written_at_kill": len(metrics.read_text().splitlines()),
        "processes_during_run": len(during),
        "process_table": table,
        "processes_10s_after_kill": len(left),
        "left": [describe(p) for p in left],
        "temp_folders_left": [h for h in homes if Path(h).exists() and h.startswith("/tmp")],
    }
    for proc in left:
        try:
            proc.kill()
        except psutil.Error:
            pass
    return result


def main(argv: list[str] | None = None) -> int:
    """Measure once; print the report and write it as JSON next to the run's folder."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine", choices=("simulation", "deployment"), default="simulation")
    parser.add_argument("--out", default=None, help="run folder (default: a temporary one)")
    args = parser.parse_args(argv)
    out = Path(args.out or tempfile.mkdtemp(prefix="feddistill-kill-")).resolve()
    result = measure(args.engine, out)
    print(f"engine {result['engine']}: {result['processes_during_run']} processes at round 2:")
    print("    pid    ppid     sid command")
    print("\n".join(result["process_table"]))
    print(f"10 s after kill -9: {result['processes_10s_after_kill']} processes left")
    print("\n".join(result["left"]))
    print(f"temporary folders left: {result['temp_folders_left']}")
    (out.parent / f"{out.name}-hard-kill.json").write_text(json.dumps(result, indent=2))
    return 0 if result["processes_10s_after_kill"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
