"""RoundMetrics: the row's columns, None for what was not measured, checkpoint rows read back."""

from __future__ import annotations

import csv
import json

import torch

from feddistill.server.policy import SentRound
from feddistill.server.results import write_rows
from feddistill.server.round_metrics import RoundMetrics, federated_round_metrics
from feddistill.server.strategy import ClientResult, RoundOutcome

EVALUATION = {"accuracy": 0.5, "loss": 1.25, "domain_0_accuracy": 0.5, "worst_domain_accuracy": 0.5}


def test_missing_teacher_accuracy_is_none_in_jsonl_and_empty_in_csv(tmp_path):
    # Prepare: a FedAvg round (no teachers)
    m = RoundMetrics(1, EVALUATION, 0.75, 4, 4, 0)
    # Execute
    write_rows(tmp_path, [m.to_row()])
    # Assert
    assert json.loads((tmp_path / "metrics.jsonl").read_text())["teacher_accuracy"] is None
    with (tmp_path / "metrics.csv").open() as fh:
        assert next(csv.DictReader(fh))["teacher_accuracy"] == ""


def test_federated_row_columns_are_in_metrics_csv_order():
    # Prepare
    m = RoundMetrics(2, EVALUATION, 0.75, 4, 3, 1, teacher_accuracy=0.9)
    m.robust_counts = {"clipped": 0, "excluded": 0, "down_weighted": 1, "capped": 0}
    # Execute
    columns = list(m.to_row())
    # Assert: the order of the default job's metrics.csv (robust_events: jsonl only)
    assert columns == [
        "round", "accuracy", "loss", "domain_0_accuracy", "worst_domain_accuracy",
        "teacher_accuracy", "student_train_loss", "sampled", "accepted", "failed",
        "uplink_bytes", "uplink_update_bytes", "uplink_logits_bytes", "uplink_bytes_per_client",
        "downlink_bytes", "downlink_bytes_per_client", "cumulative_uplink_bytes",
        "cumulative_downlink_bytes", "cumulative_fedavg_fp32_bytes", "ratio_vs_fedavg_fp32",
        "cumulative_fedavg_fp32_total_bytes", "total_ratio_vs_fedavg_fp32",
        "server_distill_loss", "clipped", "excluded", "down_weighted", "capped",
        "robust_events", "round_seconds", "wall_seconds",
    ]  # fmt: skip


def test_pooled_row_has_no_traffic_or_teacher_columns():
    # Prepare: a centralized-baseline round
    m = RoundMetrics(1, {"accuracy": 0.5, "loss": 1.0}, 0.25, 1, 1, 0, pooled=True)
    # Execute
    row = m.to_row()
    # Assert
    assert list(row) == [
        "round", "accuracy", "loss", "student_train_loss", "sampled", "accepted", "failed",
        "uplink_bytes", "cumulative_uplink_bytes", "cumulative_downlink_bytes",
        "round_seconds", "wall_seconds",
    ]  # fmt: skip


def test_old_checkpoint_row_with_empty_teacher_accuracy_reads_as_none():
    # Prepare: a row as checkpoints before RoundMetrics stored it
    row = RoundMetrics(3, EVALUATION, 0.75, 4, 4, 0, uplink_bytes=10).to_row()
    row["teacher_accuracy"] = ""
    row["client_1_accuracy"] = 0.8
    # Execute
    m = RoundMetrics.from_row(row)
    # Assert
    assert m.teacher_accuracy is None
    assert m.evaluation == EVALUATION
    assert m.client_accuracy == {"client_1_accuracy": 0.8}
    assert (m.round, m.uplink_bytes, m.pooled) == (3, 10, False)


def test_row_round_trips():
    # Prepare
    m = RoundMetrics(2, EVALUATION, 0.5, 4, 4, 0, teacher_accuracy=0.875, global_sparsity=0.5)
    m.robust_counts = {"clipped": 1, "excluded": 0, "down_weighted": 0, "capped": 0}
    # Execute / Assert
    assert RoundMetrics.from_row(m.to_row()) == m


def test_logits_reused_is_a_column_only_when_measured():
    # Prepare: a default round (None) and a round where 2 frozen teachers sent nothing
    default = RoundMetrics(1, EVALUATION, 0.75, 4, 4, 0)
    frozen = RoundMetrics(2, EVALUATION, 0.75, 4, 4, 0, logits_reused=2)
    # Execute
    default_row, frozen_row = default.to_row(), frozen.to_row()
    # Assert: the default job's metrics.csv keeps its columns
    assert "logits_reused" not in default_row
    assert frozen_row["logits_reused"] == 2
    columns = list(frozen_row)
    assert columns.index("logits_reused") == columns.index("server_distill_loss") + 1


def _accepted(partition: int, metrics: dict[str, float], uplink_bytes: int) -> ClientResult:
    return ClientResult(partition, 10, {}, None, None, metrics, uplink_bytes)


def test_class_counts_bytes_are_a_column_of_coverage_rounds_and_part_of_the_uplink():
    # Prepare: two replies of 100 payload bytes + 2 class counts each (2 * (13 + 8) = 42
    # bytes, already in their uplink_bytes, as the strategy counts them)
    counts = {"class-count-0": 6.0, "class-count-1": 4.0}
    outcome = RoundOutcome(accepted=[_accepted(p, counts, 142) for p in (0, 1)])
    sent = SentRound(messages=[], global_state={"w": torch.zeros(2)})
    # Execute
    m = federated_round_metrics(1, EVALUATION, outcome, sent, None, fp32_update_bytes=8)
    # Assert
    row = m.to_row()
    assert (row["uplink_bytes"], row["uplink_class_counts_bytes"]) == (284, 84)


def test_class_counts_bytes_are_no_column_when_no_reply_sent_counts():
    # Prepare: a reply without class counts (consensus other than coverage)
    outcome = RoundOutcome(accepted=[_accepted(0, {}, 100)])
    sent = SentRound(messages=[], global_state={"w": torch.zeros(2)})
    # Execute
    m = federated_round_metrics(1, EVALUATION, outcome, sent, None, fp32_update_bytes=8)
    # Assert
    assert "uplink_class_counts_bytes" not in m.to_row()
