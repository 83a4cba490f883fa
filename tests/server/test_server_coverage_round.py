"""The server's coverage consensus of one round: gate actions and ERA sharpening."""

from __future__ import annotations

import csv
import math

import torch

from feddistill.config import from_mapping
from feddistill.inprocess import run_inprocess_job
from feddistill.server.coverage_round import coverage_round_consensus

# teacher 0 says (0.8, 0.2), teacher 1 (0.4, 0.6) at T = 1; counts give coverage
# ((0.75, 0), (0.25, 1)), so the class vote is (0.7, 0.6) / 1.3
LOGITS = torch.tensor([[[math.log(0.8), math.log(0.2)]], [[math.log(0.4), math.log(0.6)]]])
COUNTS = torch.tensor([[3.0, 0.0], [1.0, 2.0]])


def test_coverage_era_sharpens_the_class_vote_with_temperature_one_tenth():
    # Prepare: q = (0.53846, 0.46154); softmax(q / 0.1) = 1 / (1 + e^-0.76923) = 0.68336
    # Execute
    soft, actions = coverage_round_consensus(
        LOGITS, "coverage-era", COUNTS, 1.0, reference=None, partition_ids=[0, 1], gate=False
    )
    # Assert
    assert torch.allclose(soft, torch.tensor([[0.68336, 0.31664]]), atol=1e-5)
    assert actions == []


def test_a_teacher_that_contradicts_the_student_on_its_classes_is_reported_and_loses_its_vote():
    # Prepare: 3 teachers, 2 samples the student puts in class 0 and class 1; teachers 0
    # and 1 hold class 0 and 1 and agree with it; teacher 2 holds class 0 and says 1
    logits = torch.tensor(
        [
            [[4.0, 0.0], [0.0, 4.0]],
            [[4.0, 0.0], [0.0, 4.0]],
            [[0.0, 4.0], [0.0, 4.0]],
        ]
    )
    counts = torch.tensor([[5.0, 5.0], [5.0, 5.0], [5.0, 0.0]])
    reference = torch.tensor([[4.0, 0.0], [0.0, 4.0]])
    # Execute
    _, actions = coverage_round_consensus(
        logits, "coverage", counts, 1.0, reference, partition_ids=[7, 8, 9], gate=True
    )
    # Assert: teacher 2 agrees on 0 % of its class-0 samples (median 100 %): gate 0
    assert [(a.partition_id, a.action) for a in actions] == [(9, "down-weighted")]
    assert "consensus weight x0.00" in actions[0].reason


def test_a_coverage_run_accepts_every_clients_class_counts(tmp_path):
    # Prepare: a tiny in-process job; the clients' class counts must pass the server's check
    cfg = from_mapping(
        {
            "dataset": "digits",
            "num-partitions": 2,
            "num-server-rounds": 2,
            "min-partition-size": 5,
            "teacher-models": "mlp",
            "student-model": "mlp",
            "batch-size": 64,
            "consensus": "coverage-era",
            "robust-consensus": True,
            "out-dir": str(tmp_path),
        }
    )
    # Execute
    summary = run_inprocess_job(cfg)
    # Assert: both rounds used both clients' replies
    assert summary["status"] == "completed"
    with (tmp_path / "metrics.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["accepted"], r["failed"]) for r in rows] == [("2", "0"), ("2", "0")]
