"""KD3A's Knowledge Vote and Consensus Focus on hand-computed inputs.

Logits are log-probabilities, so softmax at T = 1 gives the probabilities back.
Sample 0: A [0.95, 0.05], B [0.92, 0.08], C [0.04, 0.96]: all confident (>= 0.9);
votes class 0: 2 (A, B), class 1: 1 (C) -> consensus class 0, supporters A and B.
Sample 1: A [0.6, 0.4], B [0.7, 0.3], C [0.5, 0.5]: nobody confident -> dropped.
"""

from __future__ import annotations

import pytest
import torch

from feddistill.distill.consensus import consensus
from feddistill.distill.kd3a import (
    consensus_focus,
    consensus_quality,
    kd3a_consensus,
    kept_samples,
    vote,
)

PROBS = torch.tensor(
    [
        [[0.95, 0.05], [0.6, 0.4]],  # A
        [[0.92, 0.08], [0.7, 0.3]],  # B
        [[0.04, 0.96], [0.5, 0.5]],  # C
    ],
    dtype=torch.float64,
)
LOGITS = PROBS.log()


def test_vote_majority_of_confident_teachers_wins_over_the_most_confident():
    # Execute
    supporters, cls = vote(LOGITS)
    # Assert: C is the single most confident (0.96) but outvoted 2 : 1
    assert cls[0].item() == 0
    assert supporters[:, 0].tolist() == [True, True, False]
    assert supporters[:, 1].tolist() == [False, False, False]


def test_vote_tie_goes_to_the_larger_summed_confidence():
    # Prepare: B (0.92, class 0) against C (0.96, class 1): one vote each
    # Execute
    supporters, cls = vote(LOGITS[1:, :1])
    # Assert
    assert cls.tolist() == [1] and supporters[:, 0].tolist() == [False, True]


def test_consensus_quality_sums_the_supporters_confidence():
    # Prepare: sample 0: 0.95 + 0.92 = 1.87; sample 1 dropped: 0
    # Execute / Assert
    assert consensus_quality(LOGITS) == pytest.approx(1.87)
    assert consensus_quality(LOGITS[:0]) == 0.0


def test_consensus_focus_weights_by_leave_one_out_contribution_and_size():
    # Prepare: Q(all) = 1.87; without A: B vs C tie -> C wins, Q = 0.96, CF(A) = 0.91;
    # without B: A (0.95) vs C (0.96) -> C, Q = 0.96, CF(B) = 0.91; without C: Q = 1.87,
    # CF(C) = 0. Sizes 100, 300, 200 -> 91 : 273 : 0 -> [0.25, 0.75, 0].
    # Execute
    weights = consensus_focus(LOGITS, torch.tensor([100, 300, 200]))
    # Assert
    torch.testing.assert_close(weights, torch.tensor([0.25, 0.75, 0.0], dtype=torch.float64))


def test_consensus_focus_falls_back_to_sizes_when_nobody_contributes():
    # Prepare: sample 1 only: no confident teacher, every CF is 0
    # Execute
    weights = consensus_focus(LOGITS[:, 1:], torch.tensor([1, 1, 2]))
    # Assert
    torch.testing.assert_close(weights, torch.tensor([0.25, 0.25, 0.5], dtype=torch.float64))


def test_knowledge_vote_averages_supporters_and_drops_unconfident_samples():
    # Prepare: sample 0: mean([0.95, 0.05], [0.92, 0.08]) = [0.935, 0.065]; sample 1: zeros
    # Execute
    out = kd3a_consensus(LOGITS, "knowledge-vote", 1.0)
    # Assert
    torch.testing.assert_close(out, torch.tensor([[0.935, 0.065], [0.0, 0.0]]))
    assert kept_samples(out).tolist() == [True, False]


def test_consensus_focus_weights_the_supporters():
    # Prepare: weights A 0.25, B 0.75: 0.25 * 0.95 + 0.75 * 0.92 = 0.9275
    # Execute
    out = kd3a_consensus(LOGITS, "consensus-focus", 1.0, num_examples=torch.tensor([100, 300, 200]))
    # Assert
    torch.testing.assert_close(out, torch.tensor([[0.9275, 0.0725], [0.0, 0.0]]))


def test_knowledge_vote_returns_tempered_soft_labels_of_the_supporters():
    # Prepare: at T = 2 softmax(log p / 2) = sqrt(p) / sum sqrt(p):
    # A: sqrt(.95) = 0.974679, sqrt(.05) = 0.223607 -> [0.813392, 0.186608]
    # B: sqrt(.92) = 0.959166, sqrt(.08) = 0.282843 -> [0.772270, 0.227730]
    # mean -> [0.792831, 0.207169]
    # Execute
    out = kd3a_consensus(LOGITS[:, :1], "knowledge-vote", 2.0)
    # Assert
    torch.testing.assert_close(out, torch.tensor([[0.792831, 0.207169]]), atol=1e-5, rtol=0)


def test_consensus_dispatches_kd3a_modes():
    # Execute
    out = consensus(LOGITS.float(), "knowledge-vote", 1.0)
    # Assert
    torch.testing.assert_close(out, torch.tensor([[0.935, 0.065], [0.0, 0.0]]))


def test_unknown_kd3a_mode_lists_the_modes():
    # Execute / Assert
    with pytest.raises(
        ValueError, match="unknown KD3A mode 'vote'; valid modes: knowledge-vote, consensus-focus"
    ):
        kd3a_consensus(LOGITS, "vote", 1.0)


@pytest.mark.parametrize(
    ("logits", "gate", "match"),
    [
        (torch.zeros(2, 3), 0.9, r"logits must have shape \(N clients, B samples, K classes\)"),
        (torch.full((1, 1, 2), float("nan")), 0.9, "logits contain NaN or inf"),
        (torch.zeros(1, 1, 2), 1.0, r"confidence gate must be in \[0, 1\), got 1.0"),
    ],
)
def test_vote_rejects_bad_input(logits, gate, match):
    # Execute / Assert
    with pytest.raises(ValueError, match=match):
        vote(logits, gate)


def test_consensus_focus_rejects_bad_num_examples():
    # Execute / Assert
    with pytest.raises(
        ValueError, match=r"num_examples must have shape \(3,\), be >= 0 and sum to > 0"
    ):
        consensus_focus(LOGITS, torch.tensor([1, 2]))
