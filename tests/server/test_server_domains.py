"""Cross-domain runs: source / target / per-domain accuracy in every result file."""

from __future__ import annotations

import json

import numpy as np
import torch
from torch import nn

from feddistill.config import from_mapping
from feddistill.inprocess import run_in_process
from feddistill.learn import evaluate

SMALL = {
    "dataset": "digits",
    "partitioner": "iid",
    "target-domains": "1",
    "num-partitions": 2,
    "num-server-rounds": 2,
    "min-partition-size": 5,
    "teacher-models": "mlp",
    "student-model": "mlp",
    "batch-size": 64,
    "device": "cpu",
}


class Fixed(nn.Module):
    """Predicts the class stored in the first pixel."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.one_hot(x[:, 0, 0, 0].long(), 2).float() * 10


def test_source_and_target_accuracy_split_the_test_set_by_domain():
    # Prepare: 4 samples, domains [0, 0, 1, 1]; predictions right, wrong, right, right
    x = torch.tensor([0.0, 1.0, 1.0, 0.0]).view(4, 1, 1, 1)
    y = torch.tensor([0, 0, 1, 0])
    # Execute
    out = evaluate(Fixed(), x, y, torch.device("cpu"), np.array([0, 0, 1, 1]), (1,))
    # Assert: source 1/2, target 2/2, overall 3/4
    assert out["source_accuracy"] == 0.5 and out["target_accuracy"] == 1.0
    assert out["accuracy"] == 0.75 and out["domain_1_accuracy"] == 1.0


def test_without_target_domains_no_source_target_columns():
    # Execute
    out = evaluate(
        Fixed(), torch.zeros(2, 1, 1, 1), torch.zeros(2).long(), torch.device("cpu"), np.zeros(2)
    )
    # Assert
    assert "source_accuracy" not in out and "target_accuracy" not in out


def test_run_with_target_domains_reports_source_target_and_per_domain(tmp_path):
    # Prepare
    cfg = from_mapping({**SMALL, "out-dir": str(tmp_path)})
    # Execute
    summary = run_in_process(cfg)
    # Assert
    header = (tmp_path / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"source_accuracy", "target_accuracy", "domain_0_accuracy", "domain_1_accuracy"} <= set(
        header
    )
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["target_domains"] == [1] and set(saved["final_domain_accuracy"]) == {
        "cluster0",
        "cluster1",
    }
    assert saved["final_target_accuracy"] == summary["final_target_accuracy"]
    assert "| cluster1 | target |" in (tmp_path / "report.md").read_text()
    assert (tmp_path / "accuracy_by_domain.png").is_file()


def test_knowledge_vote_run_skips_dropped_samples(tmp_path):
    # Regression: zero rows of dropped samples must not reach kd_loss (rows must sum to 1).
    # Prepare
    cfg = from_mapping({**SMALL, "consensus": "knowledge-vote", "out-dir": str(tmp_path)})
    # Execute
    summary = run_in_process(cfg)
    # Assert
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert summary["status"] == "completed" and [r["accepted"] for r in rows] == [2, 2]


def test_centralized_source_only_reports_target_accuracy(tmp_path):
    # Prepare
    cfg = from_mapping({**SMALL, "strategy": "centralized", "out-dir": str(tmp_path)})
    # Execute
    summary = run_in_process(cfg)
    # Assert
    assert 0.0 <= summary["final_target_accuracy"] <= 1.0
    assert "final_source_accuracy" in summary
