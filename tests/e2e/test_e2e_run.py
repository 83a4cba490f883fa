"""End-to-end: `feddistill run` through a real SuperLink, Flower simulation and Ray.

Small jobs (digits, 2-3 clients, 2 rounds) so the whole file runs in a few minutes on
2 cores. Every test checks that no Flower or Ray process is left running. A run stopped
by SIGTERM and resumed: tests/e2e/test_e2e_hard_kill.py (with the `kill -9` case, one run).
"""

from __future__ import annotations

import csv
import json
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


def without_timing(table: list[dict[str, str]]) -> list[dict[str, str]]:
    return [
        {k: v for k, v in r.items() if k not in ("round_seconds", "wall_seconds")} for r in table
    ]


def test_run_writes_every_result_and_matches_the_inprocess_engine(tmp_path, test_env):
    """One simulation-engine run (Ray) and the same job in process: the same metrics.

    The job is issue 11's: logits-only, one architecture per client, top-2 logits,
    teachers frozen after round 1 (round 2 sends no logits: the server reuses its held
    ones); and partition 2 (an mlp client) raises in every round: 2 of 3 clients remain
    (min-train-nodes=2), the cnn-small one among them. (One simulation-engine start-up
    for all of it: these were two tests, ~100 s each in the suite. The default strategy
    runs on the simulation engine in tests/e2e/test_e2e_hard_kill.py.)
    """
    # Prepare
    a, b = tmp_path / "a", tmp_path / "b"
    extra = (
        'strategy="logits-only"',
        'teacher-models="mlp,cnn-small,mlp"',
        "logits-top-m=2",
        "teacher-rounds=1",
        'fail-partitions="2"',
    )
    # Execute: the same seed and config on Flower's simulation engine and in process
    first = feddistill("run", "--out", str(a), *sets(*extra), env=test_env)
    second = feddistill(
        "run", "--engine", "inprocess", "--out", str(b), *sets(*extra), env=test_env
    )
    # Assert
    assert first.returncode == 0, first.stdout + first.stderr
    assert second.returncode == 0, second.stdout + second.stderr
    assert "round 2/2" in second.stdout  # phases shown as under the simulation engine
    assert "round   2/2" in first.stdout and "| up+down " in first.stdout
    # each phase is a plain line when piped, the export after the last round included
    for phase in (
        "s  starting SuperLink",
        "s  loading data",
        "s  round 1/2",
        "s  exporting student",
    ):
        assert phase in first.stdout, first.stdout
    assert b"\x1b[" not in (a / "flower.log").read_bytes()  # no ANSI colour codes
    summary = json.loads((a / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["rounds"] == 2
    for key in (
        "strategy",
        "final_accuracy",
        "best_accuracy",
        "uplink_bytes",
        "downlink_bytes",
        "wall_seconds",
        "config",
    ):
        assert key in summary
    for name in (
        "metrics.csv",
        "metrics.jsonl",
        "report.md",
        "accuracy_vs_round.png",
        "accuracy_vs_uplink.png",
        "bytes_vs_round.png",
        "label_distribution.png",
        "phases.jsonl",
        "command.txt",
    ):
        assert (a / name).is_file(), name
    assert (a / "checkpoints" / "latest").is_file() and any((a / "student").iterdir())
    assert len((a / "metrics.jsonl").read_text().splitlines()) == 2
    for name in ("summary.json", "report.md", "phases.jsonl", "checkpoints", "student"):
        assert (b / name).exists(), name
    table = rows(a)
    # the failing client is counted and each round goes on without it
    assert [int(r["failed"]) for r in table] == [1, 1]
    assert [int(r["accepted"]) for r in table] == [2, 2]
    # logits only: no update, logits in round 1, then the held logits are reused
    assert [int(r["uplink_update_bytes"]) for r in table] == [0, 0]
    assert int(table[0]["uplink_logits_bytes"]) > 0
    assert [int(r["logits_reused"]) for r in table] == [0, 2]
    assert int(table[1]["uplink_bytes"]) == 0
    # deterministic, and the same metrics on both engines (timing aside)
    assert without_timing(table) == without_timing(rows(b))


def test_too_few_clients_fails_with_a_clear_message(tmp_path, test_env):
    # (in process: the server's check is the same on both engines; the simulation
    # engine's reading of a failed run is tested in tests/test_engine.py)
    out = tmp_path / "fail2"
    proc = feddistill(
        "run",
        "--engine",
        "inprocess",
        "--out",
        str(out),
        *sets('fail-partitions="0,1"'),
        env=test_env,
    )
    assert proc.returncode == 1
    assert "fewer than min-train-nodes=2" in proc.stderr
    assert json.loads((out / "summary.json").read_text())["status"] == "failed"


def test_bad_config_fails_before_anything_starts(tmp_path, test_env):
    proc = feddistill("run", "--out", str(tmp_path), "--set", "consensus=median", env=test_env)
    assert proc.returncode == 2
    assert "consensus='median' is not allowed" in proc.stderr
    assert not (tmp_path / "flower.log").exists()


def test_resume_without_checkpoint_is_an_error(tmp_path, test_env):
    proc = feddistill("run", "--resume", str(tmp_path), env=test_env)
    assert proc.returncode == 2 and "no checkpoint found" in proc.stderr
