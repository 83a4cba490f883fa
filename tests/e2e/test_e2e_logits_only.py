"""End-to-end: logits-only with mixed models and a failing client, on Flower's simulation engine.

A file of its own (it was in test_e2e_run.py) so that a second pytest-xdist worker runs
this simulation-engine start-up beside that file's: the two were the suite's longest
file. The same small job as there (digits, 3 clients, 2 rounds).
"""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

SMALL = [
    'dataset="digits"',
    "num-partitions=3",
    "num-server-rounds=2",
    "min-partition-size=5",
    'teacher-models="mlp"',
    'student-model="mlp"',
    "batch-size=64",
]


def feddistill(*args: str, env: dict, timeout: float = 400) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "feddistill.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def sets(*pairs: str) -> list[str]:
    out = []
    for pair in (*SMALL, *pairs):
        out += ["--set", pair]
    return out


def rows(out: Path) -> list[dict[str, str]]:
    with (out / "metrics.csv").open() as fh:
        return list(csv.DictReader(fh))


def test_logits_only_with_mixed_models_and_a_failing_client_runs_on_the_simulation_engine(
    tmp_path, test_env
):
    # Prepare: issue 11 - one architecture per client, top-2 logits, teachers frozen
    # after round 1 (round 2 sends no logits: the server reuses its held ones); and
    # partition 2 (an mlp client) raises in every round: 2 of 3 clients remain
    # (min-train-nodes=2), the cnn-small one among them. (One simulation-engine start-up
    # for both checks; they were two tests.)
    out = tmp_path / "lo"
    extra = (
        'strategy="logits-only"',
        'teacher-models="mlp,cnn-small,mlp"',
        "logits-top-m=2",
        "teacher-rounds=1",
        'fail-partitions="2"',
    )
    # Execute
    result = feddistill("run", "--out", str(out), "--quiet", *sets(*extra), env=test_env)
    # Assert
    assert result.returncode == 0, result.stdout + result.stderr
    table = rows(out)
    # the failing client is counted and each round goes on without it
    assert [int(r["failed"]) for r in table] == [1, 1]
    assert [int(r["accepted"]) for r in table] == [2, 2]
    # logits only: no update, logits in round 1, then the held logits are reused
    assert [int(r["uplink_update_bytes"]) for r in table] == [0, 0]
    assert int(table[0]["uplink_logits_bytes"]) > 0
    assert [int(r["logits_reused"]) for r in table] == [0, 2]
    assert int(table[1]["uplink_bytes"]) == 0
