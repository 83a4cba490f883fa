"""`feddistill run --engine inprocess` against Flower's simulation engine.

One tiny job (digits, 2 clients, 2 rounds) on both engines: the same results folder
and, timing aside, the same metrics.csv. Slow: the simulation half starts Ray.
"""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

TINY = [
    'dataset="digits"',
    "num-partitions=2",
    "num-server-rounds=2",
    "min-partition-size=5",
    'teacher-models="mlp"',
    'student-model="mlp"',
    "batch-size=64",
]
TIMING = ("round_seconds", "wall_seconds")


def run(engine: str, out: Path, env: dict) -> subprocess.CompletedProcess:
    sets = [arg for pair in TINY for arg in ("--set", pair)]
    return subprocess.run(
        [sys.executable, "-m", "feddistill.cli", "run", "--engine", engine, "--out", str(out)]
        + sets,
        capture_output=True,
        text=True,
        timeout=400,
        env=env,
    )


def metrics_without_timing(out: Path) -> list[dict[str, str]]:
    with (out / "metrics.csv").open() as fh:
        return [{k: v for k, v in r.items() if k not in TIMING} for r in csv.DictReader(fh)]


def test_inprocess_engine_matches_the_simulation_engine(tmp_path, test_env):
    # Prepare
    sim_out, inproc_out = tmp_path / "simulation", tmp_path / "inprocess"

    # Execute
    sim = run("simulation", sim_out, test_env)
    inproc = run("inprocess", inproc_out, test_env)

    # Assert
    assert sim.returncode == 0, sim.stdout + sim.stderr
    assert inproc.returncode == 0, inproc.stdout + inproc.stderr
    assert "round 2/2" in inproc.stdout  # phases shown as under the simulation engine
    for name in ("summary.json", "report.md", "phases.jsonl", "checkpoints", "student"):
        assert (inproc_out / name).exists(), name
    inproc_rows = metrics_without_timing(inproc_out)
    assert len(inproc_rows) == 2
    assert inproc_rows == metrics_without_timing(sim_out)
