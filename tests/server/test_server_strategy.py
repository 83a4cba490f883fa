"""FedDistill.aggregate_round on real Flower messages: failures, validation, order."""

from __future__ import annotations

import random

import pytest
import torch
from flwr.app import ConfigRecord, Error, Message, MessageType, MetricRecord, RecordDict

from feddistill import protocol as P
from feddistill.compression import CompressionSpec, compress_update
from feddistill.compression.teacher_upload import TeacherUpload
from feddistill.config import RunConfig
from feddistill.server.strategy import FedDistill

TEMPLATE = {"w": torch.zeros(4, 3), "b": torch.zeros(3)}


def strategy(cfg: RunConfig | None = None) -> FedDistill:
    return FedDistill(TEMPLATE, P.plan_for(cfg or RunConfig()), temperature=2.0, seed=0)


def reply(
    node: int, partition: int, update: dict, n: int = 10, logits: torch.Tensor | None = None
) -> Message:
    request = Message(RecordDict({P.CONFIG: ConfigRecord({"x": 1})}), node, MessageType.TRAIN)
    payload, _ = compress_update(
        update, CompressionSpec(density=1.0, bit_width=32, error_feedback=False)
    )
    if logits is None:
        logits = torch.zeros(5, 3)
    logits_bytes = TeacherUpload(logits, torch.zeros(5)).encode(32)
    content = RecordDict(
        {
            P.METRICS: MetricRecord(
                {
                    P.NUM_EXAMPLES: n,
                    P.PARTITION_ID: partition,
                    # consensus = "coverage": all n examples of class 0
                    **P.class_count_metrics([0] * n, logits.shape[1]),
                }
            ),
            P.PAYLOAD: ConfigRecord({P.UPDATE: payload, P.LOGITS: logits_bytes}),
        }
    )
    return Message(content, reply_to=request)


def const(value: float) -> dict:
    return {"w": torch.full((4, 3), value), "b": torch.full((3,), value)}


def test_error_reply_and_nan_update_are_failures_and_the_rest_is_averaged(monkeypatch):
    # Prepare: clients send 1.0 and 2.0 (10 examples each), one NaN, one crashed. Our
    # encoder refuses NaN, so a hostile client's NaN is simulated at decode time (7.0 -> NaN).
    import feddistill.server.strategy as strategy_module

    real_decode = strategy_module.decode_tensors

    def decode_with_nan(payload, expected=None):
        return {
            k: torch.where(v == 7.0, float("nan"), v) if v.is_floating_point() else v
            for k, v in real_decode(payload, expected).items()
        }

    monkeypatch.setattr(strategy_module, "decode_tensors", decode_with_nan)
    request = Message(RecordDict({P.CONFIG: ConfigRecord({"x": 1})}), 4, MessageType.TRAIN)
    crashed = Message(
        Error(code=0, reason="Exception ... Message: out of memory\nmore"), reply_to=request
    )
    replies = [
        reply(1, 0, const(1.0)),
        reply(2, 1, const(2.0)),
        reply(3, 2, const(7.0)),
        crashed,
    ]
    # Execute
    outcome = strategy().aggregate_round(1, replies)
    # Assert
    assert [r.partition_id for r in outcome.accepted] == [0, 1]
    assert torch.equal(outcome.update["w"], torch.full((4, 3), 1.5))
    assert len(outcome.failures) == 2
    assert any("contains NaN" in f for f in outcome.failures)
    assert any("client error: out of memory" in f for f in outcome.failures)


def test_corrupted_payload_is_rejected_not_decoded():
    # Prepare
    good = reply(1, 0, const(1.0))
    bad = reply(2, 1, const(1.0))
    blob = bytearray(bad.content[P.PAYLOAD][P.UPDATE])
    blob[len(blob) // 2] ^= 0xFF
    bad.content[P.PAYLOAD][P.UPDATE] = bytes(blob)
    # Execute
    outcome = strategy().aggregate_round(1, [good, bad])
    # Assert
    assert [r.partition_id for r in outcome.accepted] == [0]
    assert "undecodable payload" in outcome.failures[0]


def test_wrong_shape_and_zero_examples_are_failures():
    wrong = reply(1, 0, {"w": torch.zeros(2, 3), "b": torch.zeros(3)})
    empty = reply(2, 1, const(1.0), n=0)
    outcome = strategy().aggregate_round(1, [wrong, empty])
    assert outcome.accepted == [] and outcome.update is None
    # the decoder checks the claimed shape against the model before allocating it
    assert "'w' claims shape (2, 3), expected (4, 3)" in outcome.failures[0]
    assert "0 examples" in outcome.failures[1]


def test_reply_order_gives_a_bit_identical_aggregate_and_consensus():
    # Prepare
    gen = torch.Generator().manual_seed(0)
    replies = [
        reply(
            10 + p,
            p,
            {"w": torch.randn(4, 3, generator=gen), "b": torch.randn(3, generator=gen)},
            5 + p,
            torch.randn(5, 3, generator=gen),
        )
        for p in range(5)
    ]
    shuffled = replies[:]
    random.Random(1).shuffle(shuffled)
    # Execute
    a = strategy().aggregate_round(1, replies)
    b = strategy().aggregate_round(1, shuffled)
    # Assert
    assert torch.equal(a.update["w"], b.update["w"]) and torch.equal(a.update["b"], b.update["b"])
    assert torch.equal(a.consensus, b.consensus)


def test_teacher_logits_are_required_for_distillation():
    msg = reply(1, 0, const(1.0))
    msg.content[P.PAYLOAD][P.LOGITS] = b""
    outcome = strategy().aggregate_round(1, [msg])
    assert "teacher logits (B, K) and affinity (B,) are required" in outcome.failures[0]


def test_sampling_is_seeded_and_respects_minimum():
    s = FedDistill(
        TEMPLATE, P.plan_for(RunConfig()), 2.0, seed=3, fraction_train=0.1, min_train_nodes=2
    )
    first = s.sample_partitions(4, 100)
    assert first == s.sample_partitions(4, 100)
    assert len(first) == 10 and first == sorted(first)
    assert len(s.sample_partitions(1, 5)) == 2


@pytest.mark.parametrize(
    ("name", "teachers", "density", "bits", "server_epochs"),
    [
        ("feddistill", True, 0.05, 4, 1),
        ("fedmd", True, 0.05, 4, 0),
        ("fedavg", False, 1.0, 32, 0),
        ("fedavg-compressed", False, 0.05, 4, 0),
        ("feddf", False, 1.0, 32, 1),
    ],
)
def test_strategy_plans(name, teachers, density, bits, server_epochs):
    plan = P.plan_for(RunConfig(strategy=name))
    assert (plan.uses_teachers, plan.density, plan.bit_width, plan.server_distill_epochs) == (
        teachers,
        density,
        bits,
        server_epochs,
    )


def test_logits_with_other_class_count_than_the_student_are_rejected_naming_both():
    # Prepare: the student has 3 classes over 5 proxy samples; one client sends 2.
    s = FedDistill(TEMPLATE, P.plan_for(RunConfig()), 2.0, seed=0, num_classes=3, proxy_size=5)
    replies = [reply(1, 0, const(1.0)), reply(2, 1, const(2.0), logits=torch.zeros(5, 2))]

    # Execute
    outcome = s.aggregate_round(1, replies)

    # Assert: rejected before decoding; the other client's round goes on.
    assert [r.partition_id for r in outcome.accepted] == [0]
    assert "'logits' claims shape (5, 2), expected (5, 3)" in outcome.failures[0]
    assert "student: 3 classes" in outcome.failures[0]


def test_logits_class_counts_that_differ_between_clients_are_rejected_naming_both():
    # Prepare: no class count given; partition 0 sends 3 classes, partition 1 sends 2.
    replies = [reply(1, 0, const(1.0)), reply(2, 1, const(2.0), logits=torch.zeros(5, 2))]

    # Execute
    outcome = strategy().aggregate_round(1, replies)

    # Assert: no torch.stack error; the first client's consensus is built.
    assert [r.partition_id for r in outcome.accepted] == [0]
    assert outcome.consensus is not None and outcome.consensus.shape == (5, 3)
    assert "(2 classes), partition 0 sent (5, 3) (3 classes)" in outcome.failures[0]


def test_any_exception_while_decoding_one_reply_fails_only_that_client(monkeypatch):
    # Prepare: decoding the third reply raises an unexpected error type.
    import feddistill.server.strategy as strategy_module

    real_decode = strategy_module.decode_tensors
    poison = reply(3, 2, const(3.0)).content[P.PAYLOAD][P.UPDATE]

    def flaky_decode(payload, expected=None):
        if payload == poison:
            raise MemoryError("cannot allocate 8 GiB")
        return real_decode(payload, expected)

    monkeypatch.setattr(strategy_module, "decode_tensors", flaky_decode)
    replies = [reply(1, 0, const(1.0)), reply(2, 1, const(2.0)), reply(3, 2, const(3.0))]

    # Execute
    outcome = strategy().aggregate_round(1, replies)

    # Assert: (1 + 2) / 2 from the other two; the reason names the error.
    assert [r.partition_id for r in outcome.accepted] == [0, 1]
    assert torch.equal(outcome.update["w"], torch.full((4, 3), 1.5))
    assert outcome.failures == ["node 3: rejected: MemoryError: cannot allocate 8 GiB"]


def test_logits_class_count_is_checked_when_only_the_class_count_is_known():
    # Prepare: K = 3 known, proxy size not: the decoded (5, 2) logits are compared.
    s = FedDistill(TEMPLATE, P.plan_for(RunConfig()), 2.0, seed=0, num_classes=3)
    replies = [reply(1, 0, const(1.0)), reply(2, 1, const(2.0), logits=torch.zeros(5, 2))]

    # Execute
    outcome = s.aggregate_round(1, replies)

    # Assert
    assert [r.partition_id for r in outcome.accepted] == [0]
    assert outcome.failures == [
        "partition 1: rejected: teacher logits have 2 classes, the student has 3"
    ]


def test_reply_claiming_another_nodes_partition_is_rejected_and_the_round_goes_on():
    # Prepare: node 1 holds partition 0, node 2 holds partition 1; node 2 claims 0
    fed = strategy()
    fed.node_partitions = {1: 0, 2: 1}
    replies = [reply(1, 0, const(1.0)), reply(2, 0, const(3.0))]
    # Execute
    outcome = fed.aggregate_round(1, replies)
    # Assert: only node 1's reply is averaged; node 2's is named
    assert [r.partition_id for r in outcome.accepted] == [0]
    assert torch.equal(outcome.update["w"], torch.full((4, 3), 1.0))
    assert outcome.failures == [
        "node 2: rejected: the reply claims partition 0, the node holds partition 1"
    ]


def test_reply_from_a_node_that_was_not_discovered_is_rejected():
    # Prepare: node 9 was never discovered
    fed = strategy()
    fed.node_partitions = {1: 0, 2: 1}
    replies = [reply(1, 0, const(1.0)), reply(2, 1, const(1.0)), reply(9, 2, const(5.0))]
    # Execute
    outcome = fed.aggregate_round(1, replies)
    # Assert
    assert [r.partition_id for r in outcome.accepted] == [0, 1]
    assert outcome.failures == [
        "node 9: rejected: the reply claims partition 2, the node holds partition None"
    ]


@pytest.mark.parametrize("fraction", [0.0, 1.5])
def test_fraction_train_outside_0_1_is_refused(fraction):
    # Execute / Assert
    with pytest.raises(ValueError, match=f"fraction_train must be in \\(0, 1\\], got {fraction}"):
        FedDistill(TEMPLATE, P.plan_for(RunConfig()), 2.0, 0, fraction_train=fraction)


def test_min_train_nodes_below_1_is_refused():
    # Execute / Assert
    with pytest.raises(ValueError, match="min_train_nodes must be >= 1, got 0"):
        FedDistill(TEMPLATE, P.plan_for(RunConfig()), 2.0, 0, min_train_nodes=0)


def test_class_counts_that_do_not_sum_to_num_examples_are_rejected_and_the_round_goes_on():
    # Prepare: partition 1 claims 10 examples but counts of 10 + 5
    bad = reply(2, 1, const(2.0))
    bad.content[P.METRICS]["class-count-1"] = 5.0
    # Execute
    outcome = strategy(RunConfig(consensus="coverage")).aggregate_round(
        1, [reply(1, 0, const(1.0)), bad]
    )
    # Assert
    assert [r.partition_id for r in outcome.accepted] == [0]
    assert (
        "bad class counts: class counts sum to 15, the reply's num-examples is 10"
        in (outcome.failures[0])
    )


def test_coverage_consensus_without_a_reference_is_the_teachers_class_vote():
    # Prepare: both clients hold only class 0; uniform logits say 1/3 per class at any T
    replies = [reply(1, 0, const(1.0)), reply(2, 1, const(2.0))]
    # Execute
    outcome = strategy(RunConfig(consensus="coverage")).aggregate_round(1, replies)
    # Assert: class 0 gets mass 1/3 (0.5 * 1/3 + 0.5 * 1/3), classes 1 and 2 none
    assert torch.allclose(outcome.consensus, torch.tensor([[1.0, 0.0, 0.0]]).expand(5, 3))


def test_class_counts_are_counted_in_the_replys_uplink_bytes():
    # Prepare: the reply's payload (update and logits) and its 3 class counts, each
    # "class-count-<k>" (13 bytes) plus a float64 value (8 bytes): 3 * 21 = 63 bytes
    msg = reply(1, 0, const(1.0))
    payload = msg.content[P.PAYLOAD]
    payload_bytes = len(payload[P.UPDATE]) + len(payload[P.LOGITS])
    # Execute
    outcome = strategy(RunConfig(consensus="coverage")).aggregate_round(1, [msg])
    # Assert
    assert outcome.accepted[0].uplink_bytes == payload_bytes + 63
