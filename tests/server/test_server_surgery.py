"""Issue 12: channel pruning of the global student between rounds (Torch-Pruning)."""

from __future__ import annotations

import pytest
import torch
from flwr.app import ConfigRecord, Message, MessageType, MetricRecord, RecordDict

from feddistill import protocol as P
from feddistill.compression import CompressionSpec, compress_update
from feddistill.config import RunConfig, from_mapping
from feddistill.inprocess import run_rounds
from feddistill.server.checkpoint import load_latest_checkpoint
from feddistill.server.strategy import FedDistill
from feddistill.server.surgery import retarget


def old_shape_reply() -> Message:
    request = Message(RecordDict({P.CONFIG: ConfigRecord({"x": 1})}), 1, MessageType.TRAIN)
    update = {"w": torch.ones(4, 3), "b": torch.ones(4)}
    payload, _ = compress_update(update, CompressionSpec(bit_width=32, error_feedback=False))
    content = RecordDict(
        {
            P.METRICS: MetricRecord({P.NUM_EXAMPLES: 10, P.PARTITION_ID: 0}),
            P.PAYLOAD: ConfigRecord({P.UPDATE: payload, P.LOGITS: b""}),
        }
    )
    return Message(content, reply_to=request)


def test_reply_for_the_old_architecture_is_rejected_naming_key_and_both_shapes():
    # Prepare: the server pruned w from 4 to 2 output channels
    template = {"w": torch.zeros(4, 3), "b": torch.zeros(4)}
    strategy = FedDistill(template, P.plan_for(RunConfig(strategy="fedavg")), 2.0, seed=0)
    retarget(strategy, {"w": torch.zeros(2, 3), "b": torch.zeros(2)}, buffer_keys=())
    # Execute
    outcome = strategy.aggregate_round(2, [old_shape_reply()])
    # Assert
    assert outcome.accepted == []
    assert len(outcome.failures) == 1
    assert "'w'" in outcome.failures[0]
    assert "(4, 3)" in outcome.failures[0] and "(2, 3)" in outcome.failures[0]


def test_channel_pruning_and_target_sparsity_together_are_refused():
    # Execute / Assert
    with pytest.raises(ValueError, match="channel-pruning-ratio=0.5 and target-sparsity=0.8"):
        RunConfig(channel_pruning_ratio=0.5, target_sparsity=0.8)


CASE = {
    "teacher-models": "cnn-small",
    "student-model": "cnn-small",
    "device": "cpu",
    "channel-pruning-ratio": 0.5,
    "channel-pruning-round": 2,
    "fraction-train": 0.5,
}


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    out = tmp_path_factory.mktemp("full")
    return out, run_rounds(from_mapping({**CASE, "num-server-rounds": 3, "out-dir": str(out)}))


@pytest.mark.slow
def test_channel_pruned_rounds_aggregate_with_half_the_channels(full):
    # Execute: the fixture ran 3 rounds, channels halved at the start of round 2
    out, rows = full
    student = load_latest_checkpoint(out / "checkpoints")["student"]
    # Assert, by hand: cnn-small = conv 1->8 (80) + conv 8->16 (1168) + fc 784->64
    # (50240) + fc 64->10 (650) = 52138; halved: conv 1->4 (40) + conv 4->8 (296) +
    # fc 392->32 (12576) + fc 32->10 (330) = 13242
    assert [r["student_parameters"] for r in rows] == [52138, 13242, 13242]
    assert [r["accepted"] for r in rows] == [2, 2, 2]
    assert tuple(student["features.0.weight"].shape) == (4, 1, 3, 3)


@pytest.mark.slow
def test_channel_pruned_run_resumes_like_the_uninterrupted_one(full, tmp_path):
    # Prepare: stopped after round 2 (already pruned)
    _, rows = full
    run_rounds(from_mapping({**CASE, "num-server-rounds": 2, "out-dir": str(tmp_path)}))
    # Execute
    resumed = run_rounds(
        from_mapping({**CASE, "num-server-rounds": 3, "out-dir": str(tmp_path), "resume": True})
    )
    # Assert
    assert resumed[-1]["accepted"] == 2
    assert resumed[-1]["student_parameters"] == 13242
    assert resumed[-1]["accuracy"] == rows[-1]["accuracy"]


def test_channel_pruning_norm_must_be_1_or_2():
    # Execute / Assert
    with pytest.raises(
        ValueError, match="channel-pruning-norm=3 is not allowed; choose one of: 1, 2"
    ):
        RunConfig(channel_pruning_norm=3)
