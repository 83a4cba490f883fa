"""strategy=logits-only: clients upload teacher logits only, each with its own model."""

from __future__ import annotations

import math

import pytest
import torch
from flwr.app import ConfigRecord, Message, MessageType, MetricRecord, RecordDict

from feddistill import protocol as P
from feddistill.compression.teacher_upload import TeacherUpload
from feddistill.config import RunConfig, from_mapping
from feddistill.distill.consensus import consensus
from feddistill.inprocess import run_rounds
from feddistill.server.logits_only import latest_client_accuracy
from feddistill.server.strategy import FedDistill

JOB = {
    "dataset": "digits",
    "strategy": "logits-only",
    "num-partitions": 4,
    "fraction-train": 0.5,
    "num-server-rounds": 3,
    "min-partition-size": 5,
    "teacher-models": "mlp,cnn-small,mlp,cnn-small",
    "student-model": "mlp",
    "batch-size": 64,
}


def _reply(update: bytes, logits: bytes) -> Message:
    request = Message(RecordDict({P.CONFIG: ConfigRecord({"x": 1})}), 5, MessageType.TRAIN)
    content = RecordDict(
        {
            P.METRICS: MetricRecord({P.NUM_EXAMPLES: 10, P.PARTITION_ID: 0}),
            P.PAYLOAD: ConfigRecord({P.UPDATE: update, P.LOGITS: logits, P.BUFFERS: b""}),
        }
    )
    return Message(content, reply_to=request)


def test_logits_only_rounds_with_mixed_architectures_send_no_weights(tmp_path):
    # Prepare
    cfg = from_mapping({**JOB, "out-dir": str(tmp_path)})
    # Execute
    rows = run_rounds(cfg)
    # Assert: nothing of a model either way; round 1 sends nothing down (no consensus)
    assert [r["accepted"] for r in rows] == [2, 2, 2]
    assert all(r["uplink_update_bytes"] == 0 and r["uplink_logits_bytes"] > 0 for r in rows)
    assert rows[0]["downlink_bytes"] == 0
    # later rounds: the fp16 consensus (B, K) only, the same bytes for each client
    assert rows[1]["downlink_bytes"] == 2 * rows[1]["downlink_bytes_per_client"] > 0
    # each sampled client's own model is scored on the global test set
    reported = [[k for k in r if k.startswith("client_") and k[7:-9].isdigit()] for r in rows]
    assert [len(keys) for keys in reported] == [2, 2, 2]
    assert all(0.0 <= r["client_accuracy_mean"] <= 1.0 for r in rows)


def test_consensus_download_is_the_fp16_soft_labels_at_hand_computed_size(tmp_path):
    # Prepare
    cfg = from_mapping(
        {**JOB, "out-dir": str(tmp_path), "num-server-rounds": 2, "consensus-bit-width": 16}
    )
    from feddistill.data import prepare_federated_data

    proxy = len(prepare_federated_data(cfg.data_spec()).splits.proxy_x)
    # Execute
    rows = run_rounds(cfg)
    # Assert: header 18 + record (2 + 11 name "soft-labels", 1 dtype, 1 ndim, 8 shape,
    # 1 kind, 17 meta, 8 index length, B * 10 classes * 2 bytes) + crc 4
    assert rows[1]["downlink_bytes_per_client"] == 18 + 49 + proxy * 10 * 2 + 4


def test_logits_only_reply_with_a_student_update_is_rejected():
    # Prepare
    strategy = FedDistill(
        {"w": torch.zeros(2)},
        P.plan_for(RunConfig(strategy="logits-only")),
        2.0,
        seed=0,
        num_classes=3,
        proxy_size=4,
    )
    logits = TeacherUpload(torch.zeros(4, 3), torch.zeros(4)).encode(32)
    # Execute
    outcome = strategy.aggregate_round(1, [_reply(b"12345", logits)])
    # Assert
    assert outcome.accepted == []
    assert "logits-only clients upload no student update, got 5 bytes" in outcome.failures[0]


def test_era_sharpens_the_mean_probabilities_at_temperature_one_tenth():
    # Prepare: two clients whose softmax outputs average to (0.6, 0.4)
    p1, p2 = torch.tensor([0.8, 0.2]), torch.tensor([0.4, 0.6])
    logits = torch.stack([p1.log(), p2.log()]).unsqueeze(1)  # (N=2, B=1, K=2)
    # Execute
    out = consensus(logits, "era", temperature=1.0)
    # Assert: softmax((0.6, 0.4) / 0.1) = (1, e^-2) / (1 + e^-2)
    assert out[0, 0].item() == pytest.approx(1 / (1 + math.exp(-2)), rel=1e-5)


def test_summary_keeps_each_clients_newest_accuracy_under_partial_participation():
    # Prepare: client 0 took part in rounds 1 and 2, client 3 only in round 1
    rows = [
        {"client_0_accuracy": 0.5, "client_3_accuracy": 0.7, "client_accuracy_mean": 0.6},
        {"client_0_accuracy": 0.8, "client_accuracy_mean": 0.8},
    ]
    # Execute
    latest = latest_client_accuracy(rows)
    # Assert
    assert latest == {"client_0_accuracy": 0.8, "client_3_accuracy": 0.7}
