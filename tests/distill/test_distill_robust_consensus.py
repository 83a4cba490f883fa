"""Robust consensus weights: normalised affinity, per-sample share cap, agreement gate."""

import pytest
import torch

from feddistill.distill.consensus import consensus
from feddistill.distill.robust_consensus import (
    agreement_gate,
    cap_share,
    normalise_affinity,
    robust_consensus,
)


def onehot_logits(classes, k=3, scale=10.0):
    """(N, B, K) logits whose argmax per client and sample is `classes[n][b]`."""
    return torch.nn.functional.one_hot(torch.tensor(classes), k).float() * scale


def test_normalise_affinity_gives_each_client_mean_one():
    # Prepare: client 0 peaked, client 1 claims the maximum everywhere, client 2 zeros
    affinity = torch.tensor([[0.9, 0.1, 0.2], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
    # Execute
    out = normalise_affinity(affinity)
    # Assert: 0.9/0.4, 0.1/0.4, 0.2/0.4; the flat claim is 1 everywhere
    assert out.tolist() == [
        pytest.approx([2.25, 0.25, 0.5]),
        [1.0, 1.0, 1.0],
        [1.0, 1.0, 1.0],
    ]


@pytest.mark.parametrize("bad", [torch.ones(3), torch.tensor([[1.0, -1.0]])])
def test_normalise_affinity_rejects_bad_shape_or_negative(bad):
    with pytest.raises(ValueError, match=r"shape \(N, B\)|finite and non-negative"):
        normalise_affinity(bad)


def test_cap_share_hands_the_excess_to_the_others_in_proportion():
    # Prepare: one column, weights 8, 1, 1 (shares 0.8, 0.1, 0.1), cap 0.5
    weights = torch.tensor([[8.0], [1.0], [1.0]])
    # Execute
    capped, cut = cap_share(weights, 0.5)
    # Assert: 8 -> 5 (half of 10); the 3 extra split 1.5 / 1.5 -> 2.5, 2.5
    assert capped.flatten().tolist() == pytest.approx([5.0, 2.5, 2.5])
    assert cut.flatten().tolist() == [True, False, False]


def test_cap_share_keeps_a_lone_client():
    capped, _ = cap_share(torch.tensor([[3.0], [0.0]]), 0.6)
    assert capped.flatten().tolist() == [3.0, 0.0]


def test_cap_share_rejects_a_share_outside_0_1():
    with pytest.raises(ValueError, match=r"max-client-share must be in \(0, 1\], got 0.0"):
        cap_share(torch.ones(2, 2), 0.0)


def test_agreement_gate_down_weights_a_teacher_that_disagrees():
    # Prepare: reference predicts (0, 1, 2, 0); clients 0 and 1 agree on 4/4 and 3/4,
    # client 2 (shifted by one class) on 0/4; uniform weights
    reference = onehot_logits([0, 1, 2, 0])
    logits = onehot_logits([[0, 1, 2, 0], [0, 1, 2, 2], [1, 2, 0, 1]])
    # Execute
    gate, rate = agreement_gate(logits, torch.ones(3, 4), reference, tolerance=0.5)
    # Assert: median rate 0.75; gate = min(1, rate / 0.375)
    assert rate.tolist() == [1.0, 0.75, 0.0]
    assert gate.tolist() == [1.0, 1.0, 0.0]


def test_agreement_gate_judges_a_teacher_on_the_samples_it_claims():
    # Prepare: client 0 is right on sample 0 only, and claims only sample 0
    reference = onehot_logits([0, 1])
    logits = onehot_logits([[0, 2], [0, 1]])
    weights = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    # Execute
    _, rate = agreement_gate(logits, weights, reference)
    # Assert
    assert rate.tolist() == [1.0, 1.0]


@pytest.mark.parametrize(
    ("weights", "reference", "tolerance", "match"),
    [
        (torch.ones(2, 2), torch.zeros(3, 3), 0.5, r"reference must have shape \(B, K\)"),
        (torch.ones(2, 3), torch.zeros(2, 3), 0.5, r"weights must have shape \(N, B\)"),
        (torch.ones(2, 2), torch.zeros(2, 3), 0.0, r"tolerance must be in \(0, 1\]"),
    ],
)
def test_agreement_gate_rejects_bad_arguments(weights, reference, tolerance, match):
    with pytest.raises(ValueError, match=match):
        agreement_gate(torch.zeros(2, 2, 3), weights, reference, tolerance)


def test_claiming_maximal_affinity_buys_no_weight():
    # Prepare: 2 proxy samples; honest client 0 claims sample 0 (0.9 vs 0.1), the
    # attacker (client 1) claims the maximum, 1.0, on both, with the wrong class
    logits = onehot_logits([[0, 1], [2, 2]], scale=20.0)
    affinity = torch.tensor([[0.9, 0.1], [1.0, 1.0]])
    # Execute
    plain = consensus(logits, "domain", 1.0, affinity=affinity)
    robust = robust_consensus(logits, "domain", 1.0, affinity=affinity, max_share=1.0)
    # Assert: plain weights 0.9 : 1.0 on sample 0 -> the attacker wins it;
    # normalised 1.8 : 1.0 -> the honest client wins it (share 1.8 / 2.8 = 0.64)
    assert plain[0].argmax().item() == 2
    assert robust.soft_labels[0].argmax().item() == 0
    assert robust.soft_labels[0, 0].item() == pytest.approx(1.8 / 2.8, abs=1e-4)


def test_robust_consensus_with_a_reference_drops_the_shifted_teacher():
    # Prepare: 3 clients, 2 honest; the third predicts the class shifted by one and
    # claims maximal affinity; the reference (global student) predicts the truth
    truth = [0, 1, 2, 0]
    logits = onehot_logits([truth, truth, [1, 2, 0, 1]])
    affinity = torch.tensor([[1.0, 0.5, 0.5, 1.0], [0.5, 1.0, 1.0, 0.5], [1.0] * 4])
    # Execute
    result = robust_consensus(
        logits, "domain", 1.0, affinity=affinity, reference=onehot_logits(truth)
    )
    # Assert
    assert result.soft_labels.argmax(dim=1).tolist() == truth
    assert result.client_weights.tolist() == [1.0, 1.0, 0.0]


def test_consensus_client_weights_must_be_positive():
    with pytest.raises(ValueError, match=r"client_weights must be \(2,\), positive and finite"):
        consensus(torch.zeros(2, 1, 3), "mean", 1.0, client_weights=torch.tensor([1.0, 0.0]))


def test_robust_consensus_rejects_logits_that_are_not_3d():
    with pytest.raises(ValueError, match=r"logits must have shape \(N, B, K\), got \(2, 3\)"):
        robust_consensus(torch.zeros(2, 3), "mean", 1.0)
