"""Issue 12: the server's global mask through aggregation, partial participation, resume."""

from __future__ import annotations

import pytest
import torch
from flwr.app import ConfigRecord, Message, MessageType, MetricRecord, RecordDict

from feddistill import protocol as P
from feddistill.compression import CompressionSpec, compress_update
from feddistill.compression.masks import pack_unmasked
from feddistill.config import RunConfig, from_mapping
from feddistill.inprocess import run_rounds
from feddistill.server.aggregate import apply_update
from feddistill.server.checkpoint import load_latest_checkpoint
from feddistill.server.strategy import FedDistill

TEMPLATE = {"w": torch.zeros(2, 3), "b": torch.zeros(3)}
MASKS = {"w": torch.tensor([[True, False, True], [False, False, True]])}


def masked_strategy() -> FedDistill:
    s = FedDistill(TEMPLATE, P.plan_for(RunConfig(strategy="fedavg")), temperature=2.0, seed=0)
    s.masks, s.mask_version = MASKS, 4
    return s


def reply(node: int, partition: int, update: dict, version: int) -> Message:
    request = Message(RecordDict({P.CONFIG: ConfigRecord({"x": 1})}), node, MessageType.TRAIN)
    payload, _ = compress_update(
        pack_unmasked(update, MASKS), CompressionSpec(bit_width=32, error_feedback=False)
    )
    metrics = {P.NUM_EXAMPLES: 10, P.PARTITION_ID: partition, P.MASK_VERSION: version}
    content = RecordDict(
        {
            P.METRICS: MetricRecord(metrics),
            P.PAYLOAD: ConfigRecord({P.UPDATE: payload, P.LOGITS: b""}),
        }
    )
    return Message(content, reply_to=request)


def test_masked_weights_stay_exactly_zero_after_aggregation():
    # Prepare: two clients send 1.0 and 3.0 in their kept entries; global masked entries 0
    ones = {"w": torch.full((2, 3), 1.0), "b": torch.ones(3)}
    threes = {"w": torch.full((2, 3), 3.0), "b": torch.ones(3)}
    global_state = {"w": torch.tensor([[0.5, 0.0, 0.5], [0.0, 0.0, 0.5]]), "b": torch.zeros(3)}
    # Execute
    outcome = masked_strategy().aggregate_round(1, [reply(1, 0, ones, 4), reply(2, 1, threes, 4)])
    new = apply_update(global_state, outcome.update)
    # Assert: kept entries 0.5 + mean(1, 3) = 2.5, masked entries exactly 0
    assert new["w"].tolist() == [[2.5, 0.0, 2.5], [0.0, 0.0, 2.5]]


def test_reply_made_with_an_old_mask_is_rejected_and_the_round_goes_on():
    # Prepare
    update = {"w": torch.ones(2, 3), "b": torch.ones(3)}
    # Execute
    outcome = masked_strategy().aggregate_round(1, [reply(1, 0, update, 2), reply(2, 1, update, 4)])
    # Assert
    assert [r.partition_id for r in outcome.accepted] == [1]
    assert outcome.failures == [
        "node 1: rejected: update made with mask version 2, the round's mask is version 4"
    ]


CASE = {
    "teacher-models": "cnn-small",
    "student-model": "cnn-small",
    "device": "cpu",
    "target-sparsity": 0.8,
    "sparsity-start-round": 1,
    "sparsity-end-round": 1,
    "fraction-train": 0.5,
    # a few SGD steps per client and round: the mask's path is under test, not accuracy
    "local-steps": 4,
    "teacher-local-steps": 4,
}
# cnn-small's conv / linear weights: 8*1*3*3 + 16*8*3*3 + 64*784 + 10*64 = 52040 bits
BITMAP_BYTES = 12 + 52040 // 8


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    out = tmp_path_factory.mktemp("full")
    rows = run_rounds(from_mapping({**CASE, "num-server-rounds": 3, "out-dir": str(out)}))
    return out, rows


@pytest.mark.slow
def test_mask_goes_down_once_to_each_client_that_lacks_it(full):
    # Execute: the fixture ran 3 rounds; seed 0 samples partitions [1, 3], [0, 2], [1, 3]
    out, rows = full
    ckpt = load_latest_checkpoint(out / "checkpoints")
    # Assert: round 1 and 2 send the bitmap to both sampled clients, round 3 to none
    assert [r["downlink_mask_bytes"] for r in rows] == [2 * BITMAP_BYTES, 2 * BITMAP_BYTES, 0]
    assert [r["accepted"] for r in rows] == [2, 2, 2]
    assert ckpt["mask"]["version"] == 1
    assert ckpt["mask"]["known"] == {0: 1, 1: 1, 2: 1, 3: 1}
    for key, keep in ckpt["mask"]["masks"].items():
        assert int((ckpt["student"][key][~keep] != 0).sum()) == 0, key
    assert rows[-1]["global_sparsity"] == pytest.approx(0.8, abs=1e-4)


@pytest.mark.slow
def test_resumed_sparse_run_matches_the_uninterrupted_one(full, tmp_path):
    # Prepare: the same run stopped after round 2
    _, rows = full
    run_rounds(from_mapping({**CASE, "num-server-rounds": 2, "out-dir": str(tmp_path)}))
    # Execute
    resumed = run_rounds(
        from_mapping({**CASE, "num-server-rounds": 3, "out-dir": str(tmp_path), "resume": True})
    )
    # Assert: the mask and who knows it came back from the checkpoint
    assert resumed[-1]["downlink_mask_bytes"] == 0
    assert resumed[-1]["accuracy"] == rows[-1]["accuracy"]
    assert resumed[-1]["uplink_update_bytes"] == rows[-1]["uplink_update_bytes"]


@pytest.mark.slow
def test_sparse_run_exports_its_trained_mask_compressed(full):
    # Prepare: reopen the finished 3-round run (its checkpoint holds the 80% student)
    from feddistill.compression import load_student
    from feddistill.inprocess import task_identity
    from feddistill.server.loop import FederationRun

    out, _ = full
    cfg = from_mapping({**CASE, "num-server-rounds": 3, "out-dir": str(out), "resume": True})
    with task_identity():
        run = FederationRun(cfg)
        # Execute
        summary = run.finish(wall_seconds=1.0)
    export = summary["student_export"]
    # Assert: the mask's 80% (not export-sparsity's 50%), stored zlib, loadable
    assert export["sparsity"] == pytest.approx(0.8, abs=1e-4)
    assert export["file"] == "student_int8.pt.zlib"
    assert (out / "student" / "student_int8.pt.zlib").stat().st_size == export["bytes"][
        "int8_torchscript_zlib"
    ]
    assert load_student(out / "student")(run.data.splits.test_x[:2]).shape == (2, 10)
