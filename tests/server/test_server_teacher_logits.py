"""Issue 11: the server reuses a frozen teacher's logits, across rounds and resume."""

from __future__ import annotations

import pytest
import torch
from flwr.app import ConfigRecord, Message, MessageType, MetricRecord, RecordDict

from feddistill import protocol as P
from feddistill.compression.teacher_upload import TeacherUpload
from feddistill.config import RunConfig, from_mapping
from feddistill.inprocess import run_rounds
from feddistill.server.aggregate import RejectedUpdate
from feddistill.server.strategy import FedDistill
from feddistill.server.teacher_logits import HeldLogits

JOB = {
    "dataset": "digits",
    "strategy": "logits-only",
    "num-partitions": 2,
    "num-server-rounds": 3,
    "teacher-models": "mlp",
    "student-model": "mlp",
    "batch-size": 64,
    "teacher-rounds": 1,
}


def _strategy(top_m: int = 0) -> FedDistill:
    plan = P.plan_for(RunConfig(strategy="logits-only"))
    strategy = FedDistill(
        {"w": torch.zeros(2)}, plan, temperature=2.0, seed=0, num_classes=3, proxy_size=4
    )
    strategy.logits_top_m = top_m
    return strategy


def _reply(partition: int, logits: bytes, reused: bool = False, whole: bool = False) -> Message:
    request = Message(RecordDict({P.CONFIG: ConfigRecord({"x": 1})}), 5, MessageType.TRAIN)
    metrics = {P.NUM_EXAMPLES: 10, P.PARTITION_ID: partition, P.LOGITS_REUSED: float(reused)}
    if whole:
        metrics[P.LOGITS_WHOLE_PROXY] = 1.0
    content = RecordDict(
        {
            P.METRICS: MetricRecord(metrics),
            P.PAYLOAD: ConfigRecord({P.UPDATE: b"", P.LOGITS: logits, P.BUFFERS: b""}),
        }
    )
    return Message(content, reply_to=request)


def _upload(value: float) -> bytes:
    return TeacherUpload(torch.full((4, 3), value), torch.zeros(4)).encode(bit_width=32)


def test_reused_logits_are_the_last_accepted_ones_and_cost_no_uplink():
    # Prepare: round 1 partition 0 sends logits of 1.0 and partition 1 of 3.0
    strategy = _strategy()
    strategy.aggregate_round(1, [_reply(0, _upload(1.0)), _reply(1, _upload(3.0))])
    # Execute: round 2, partition 0 reuses, partition 1 sends new logits (5.0)
    outcome = strategy.aggregate_round(2, [_reply(0, b"", reused=True), _reply(1, _upload(5.0))])
    # Assert
    first, second = outcome.accepted
    assert torch.equal(first.logits, torch.full((4, 3), 1.0))
    assert first.uplink_bytes == 0
    assert torch.equal(second.logits, torch.full((4, 3), 5.0))
    assert strategy.held_logits.config_value() == "0,1"


def test_reply_reusing_logits_the_server_does_not_hold_is_rejected():
    # Prepare: nothing held yet
    strategy = _strategy()
    # Execute
    outcome = strategy.aggregate_round(1, [_reply(0, b"", reused=True), _reply(1, _upload(2.0))])
    # Assert: the round goes on with partition 1
    assert [r.partition_id for r in outcome.accepted] == [1]
    assert "partition 0 reuses teacher logits the server does not hold" in outcome.failures[0]


def test_held_logits_reused_raises_for_an_unknown_partition():
    # Prepare
    held = HeldLogits()
    held.logits[2] = (torch.zeros(4, 3), torch.zeros(4))
    # Execute / Assert
    with pytest.raises(RejectedUpdate, match=r"partition 7 reuses .* \(held: \[2\]\)"):
        held.reused(7)


def test_held_logits_survive_a_state_dict_round_trip():
    # Prepare
    held = HeldLogits()
    held.logits[1] = (torch.arange(12.0).reshape(4, 3), torch.ones(4))
    # Execute
    restored = HeldLogits()
    restored.load_state_dict(held.state_dict())
    # Assert
    assert restored.config_value() == "1"
    assert torch.equal(restored.logits[1][0], torch.arange(12.0).reshape(4, 3))
    assert torch.equal(restored.logits[1][1], torch.ones(4))


def test_top_m_reply_is_decoded_to_dense_logits():
    # Prepare: K=3, m=1, fp32: row [2, 0, 0] -> top class 0 = 2, fill 0
    strategy = _strategy(top_m=1)
    logits = torch.tensor([[2.0, 0.0, 0.0]]).repeat(4, 1)
    payload = TeacherUpload(logits, torch.zeros(4)).encode(32, top_m=1, temperature=2.0)
    # Execute
    outcome = strategy.aggregate_round(1, [_reply(0, payload), _reply(1, payload)])
    # Assert
    assert torch.allclose(outcome.accepted[0].logits, logits)
    assert outcome.accepted[0].uplink_bytes == len(payload)


def test_top_m_reply_without_known_shapes_is_rejected():
    # Prepare: the server does not know B and K
    strategy = _strategy(top_m=1)
    strategy.proxy_size = None
    payload = TeacherUpload(torch.zeros(4, 3), torch.zeros(4)).encode(32, top_m=1)
    # Execute
    outcome = strategy.aggregate_round(1, [_reply(0, payload)])
    # Assert
    assert "top-m logits need the proxy size and class count" in outcome.failures[0]


def test_frozen_teacher_logits_are_reused_across_rounds_and_resume(tmp_path):
    # Prepare: teacher-rounds=1, 3 rounds straight vs 2 rounds, then resumed to 3
    straight = run_rounds(from_mapping({**JOB, "out-dir": str(tmp_path / "a")}))
    run_rounds(from_mapping({**JOB, "num-server-rounds": 2, "out-dir": str(tmp_path / "b")}))
    # Execute
    resumed = run_rounds(from_mapping({**JOB, "out-dir": str(tmp_path / "b"), "resume": True}))
    # Assert: rounds 2-3 send no logits; the resumed round 3 equals the straight one
    assert [r["logits_reused"] for r in straight] == [0, 2, 2]
    assert [r["uplink_logits_bytes"] for r in straight][1:] == [0, 0]
    assert resumed[-1]["logits_reused"] == 2
    assert resumed[-1]["accuracy"] == straight[-1]["accuracy"]
    assert resumed[-1]["uplink_bytes"] == 0


def test_with_a_logits_subset_only_whole_proxy_logits_are_held_and_sliced():
    # Prepare: B=4 proxy rows, this round's rows [1, 3]; partition 0 trained (2 rows),
    # partition 1 resends its frozen teacher's whole-proxy cache (4 rows: 0, 1, 2, 3)
    strategy = _strategy()
    strategy.proxy_size, strategy.proxy_rows = 2, torch.tensor([1, 3])
    subset = TeacherUpload(torch.zeros(2, 3), torch.zeros(2)).encode(bit_width=32)
    whole = TeacherUpload(torch.arange(4.0)[:, None].repeat(1, 3), torch.zeros(4)).encode(
        bit_width=32
    )
    # Execute: round 1, then round 2 with rows [0, 2], partition 1 reusing
    first = strategy.aggregate_round(1, [_reply(0, subset), _reply(1, whole, whole=True)])
    strategy.proxy_rows = torch.tensor([0, 2])
    second = strategy.aggregate_round(2, [_reply(0, subset), _reply(1, b"", reused=True)])
    # Assert: the subset upload is not held; the whole one is, and each round reads its rows
    assert strategy.held_logits.config_value() == "1"
    assert first.accepted[1].logits[:, 0].tolist() == [1.0, 3.0]
    assert second.accepted[1].logits[:, 0].tolist() == [0.0, 2.0]
    assert strategy.held_logits.logits[1][0].shape == (4, 3)


def test_a_whole_proxy_resend_of_the_wrong_size_is_rejected():
    # Prepare: B=4 but the resend holds 2 rows
    strategy = _strategy()
    strategy.proxy_size, strategy.proxy_rows = 2, torch.tensor([1, 3])
    short = TeacherUpload(torch.zeros(2, 3), torch.zeros(2)).encode(bit_width=32)
    # Execute
    outcome = strategy.aggregate_round(1, [_reply(0, short, whole=True), _reply(1, short)])
    # Assert: the round goes on with partition 1
    assert [r.partition_id for r in outcome.accepted] == [1]
    assert "4 proxy samples" in outcome.failures[0]


def test_frozen_teachers_with_a_logits_subset_reuse_whole_logits_across_resume(tmp_path):
    # Prepare: teacher-rounds=1, half the proxy rows per round
    job = {**JOB, "logits-subset": 0.5}
    straight = run_rounds(from_mapping({**job, "out-dir": str(tmp_path / "a")}))
    run_rounds(from_mapping({**job, "num-server-rounds": 2, "out-dir": str(tmp_path / "b")}))
    # Execute
    resumed = run_rounds(from_mapping({**job, "out-dir": str(tmp_path / "b"), "resume": True}))
    # Assert: round 2 resends each whole cache once (B rows: more than round 1's b),
    # round 3 sends none; the resumed round 3 equals the straight one
    reused = [r["logits_reused"] for r in straight]
    logits_bytes = [r["uplink_logits_bytes"] for r in straight]
    assert reused == [0, 0, 2]
    assert logits_bytes[1] > logits_bytes[0] > 0 and logits_bytes[2] == 0
    assert resumed[-1]["accuracy"] == straight[-1]["accuracy"]
    assert resumed[-1]["uplink_bytes"] == 0


def test_negative_logits_top_m_is_refused():
    # Execute / Assert
    with pytest.raises(ValueError, match=r"logits-top-m=-1 is out of range; allowed: \[0, inf\)"):
        from_mapping({"logits-top-m": -1})


@pytest.mark.parametrize("strategy", ["feddistill", "logits-only"])
def test_frozen_teachers_vote_in_the_coverage_consensus(tmp_path, strategy):
    # Prepare: coverage-era weighs each teacher by its class counts; before session 27 a
    # frozen teacher's reply (no logits sent) had none and the server crashed in round 2
    job = {**JOB, "strategy": strategy, "consensus": "coverage-era"}
    # Execute
    rows = run_rounds(from_mapping({**job, "out-dir": str(tmp_path)}))
    # Assert: every round ran, rounds 2-3 on the held logits of both clients
    assert [r["logits_reused"] for r in rows] == [0, 2, 2]
    assert [r["accepted"] for r in rows] == [2, 2, 2]


@pytest.mark.parametrize(
    ("values", "warns"),
    [
        ({}, False),  # KMeans clients: no label skew
        ({"partitioner": "dirichlet", "dirichlet-alpha": 0.1}, True),
        ({"partitioner": "dirichlet", "dirichlet-alpha": 0.1, "teacher-rounds": 0}, False),
        ({"partitioner": "dirichlet", "dirichlet-alpha": 0.5}, False),
        ({"partitioner": "dirichlet", "dirichlet-alpha": 0.1, "num-server-rounds": 5}, False),
        ({"partitioner": "dirichlet", "dirichlet-alpha": 0.1, "strategy": "fedavg"}, False),
        # a plateau freezes teachers too; domain-dirichlet reads the same alpha
        (
            {
                "partitioner": "dirichlet",
                "dirichlet-alpha": 0.1,
                "teacher-rounds": 0,
                "teacher-plateau-rounds": 1,
            },
            True,
        ),
        ({"partitioner": "domain-dirichlet", "dirichlet-alpha": 0.1}, True),
        # half the clients per round: each expects 5 rounds in 10, so none freezes
        ({"partitioner": "dirichlet", "dirichlet-alpha": 0.1, "fraction-train": 0.5}, False),
    ],
)
def test_frozen_teachers_under_strong_label_skew_are_warned_about(values, warns):
    from feddistill.server.loop import frozen_teachers_warning

    # Prepare: the defaults (teacher-rounds=5, 10 rounds) with the given changes
    cfg = P.effective_config(from_mapping(values))
    # Execute
    warning = frozen_teachers_warning(cfg, P.plan_for(cfg))
    # Assert
    assert (warning is not None) is warns
    if warns:
        assert "teachers freeze (teacher-" in warning and "set teacher-rounds=0" in warning
