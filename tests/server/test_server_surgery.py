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
from feddistill.server.surgery import consensus_kd_gradients, importance_gradients, retarget


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


def _linear_student() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))


def test_consensus_kd_gradients_in_batches_equal_the_full_set_mean():
    # Prepare: 5 proxy rows; the batched sum weights each batch by its share of rows
    proxy = torch.arange(20, dtype=torch.float32).reshape(5, 1, 2, 2) / 20
    soft = torch.softmax(torch.arange(15, dtype=torch.float32).reshape(5, 3), dim=1)
    full_model, batched_model = _linear_student(), _linear_student()
    # Execute
    consensus_kd_gradients(proxy, soft, 2.0, batch_size=5)(full_model)
    consensus_kd_gradients(proxy, soft, 2.0, batch_size=2)(batched_model)
    # Assert
    for full_p, batched_p in zip(full_model.parameters(), batched_model.parameters(), strict=True):
        assert torch.allclose(full_p.grad, batched_p.grad, atol=1e-6)


def test_consensus_kd_gradients_leave_out_rows_a_kd3a_mode_dropped():
    # Prepare: row 1 is all zeros (dropped); its input would change the gradient
    proxy = torch.stack([torch.ones(1, 2, 2), 9 * torch.ones(1, 2, 2)])
    soft = torch.tensor([[0.2, 0.3, 0.5], [0.0, 0.0, 0.0]])
    with_dropped, kept_only = _linear_student(), _linear_student()
    # Execute
    consensus_kd_gradients(proxy, soft, 2.0)(with_dropped)
    consensus_kd_gradients(proxy[:1], soft[:1], 2.0)(kept_only)
    # Assert
    assert torch.equal(with_dropped[1].weight.grad, kept_only[1].weight.grad)


def test_consensus_kd_gradients_with_mismatched_rows_are_refused():
    # Execute / Assert
    with pytest.raises(ValueError, match="proxy_x has 2 rows but soft_labels has 3"):
        consensus_kd_gradients(torch.zeros(2, 1, 2, 2), torch.full((3, 3), 1 / 3), 2.0)


def test_consensus_kd_gradients_without_a_kept_row_are_refused():
    # Execute / Assert
    with pytest.raises(ValueError, match="no consensus row is kept"):
        consensus_kd_gradients(torch.zeros(2, 1, 2, 2), torch.zeros(2, 3), 2.0)


def test_magnitude_importance_needs_no_gradient():
    # Execute
    fn = importance_gradients(RunConfig(), torch.zeros(2, 1, 2, 2), None, 2)
    # Assert
    assert fn is None


def test_taylor_importance_without_a_consensus_raises():
    # Prepare
    cfg = RunConfig(
        channel_pruning_ratio=0.5, channel_pruning_round=2, channel_pruning_importance="taylor"
    )
    # Execute / Assert
    with pytest.raises(RuntimeError, match="needs last round's consensus"):
        importance_gradients(cfg, torch.zeros(2, 1, 2, 2), None, 2)


@pytest.mark.slow
def test_taylor_channel_pruned_run_aggregates_with_half_the_channels(tmp_path):
    # Prepare: digits (8x8), mlp student 64 -> 256 -> 128 -> 10, halved at round 2
    cfg = from_mapping(
        {
            "dataset": "digits",
            "teacher-models": "mlp",
            "student-model": "mlp",
            "device": "cpu",
            "num-server-rounds": 2,
            "channel-pruning-ratio": 0.5,
            "channel-pruning-round": 2,
            "channel-pruning-importance": "taylor",
            "out-dir": str(tmp_path),
        }
    )
    # Execute
    rows = run_rounds(cfg)
    # Assert, by hand: 64*256+256 + 256*128+128 + 128*10+10 = 16640 + 32896 + 1290 = 50826;
    # halved: 64*128+128 + 128*64+64 + 64*10+10 = 8320 + 8256 + 650 = 17226
    assert [r["student_parameters"] for r in rows] == [50826, 17226]
    assert rows[-1]["accepted"] == 4
