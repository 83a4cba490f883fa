"""Class-coverage-weighted consensus (consensus = "coverage"), on hand-computed inputs."""

from __future__ import annotations

import math

import pytest
import torch

from feddistill.distill.consensus import consensus
from feddistill.distill.coverage import (
    class_coverage,
    coverage_consensus,
    coverage_gate_weights,
)

# Two teachers, one proxy sample, two classes. Logits are log-probabilities, so at T = 1
# teacher 0 says (0.8, 0.2) and teacher 1 says (0.4, 0.6).
LOGITS = torch.tensor([[[math.log(0.8), math.log(0.2)]], [[math.log(0.4), math.log(0.6)]]])
# teacher 0 holds 3 examples of class 0; teacher 1 holds 1 of class 0 and 2 of class 1
COUNTS = torch.tensor([[3.0, 0.0], [1.0, 2.0]])


def test_class_coverage_is_each_clients_share_of_every_class():
    # Prepare: column sums (4, 2)
    # Execute
    coverage = class_coverage(COUNTS)
    # Assert
    assert torch.allclose(coverage, torch.tensor([[0.75, 0.0], [0.25, 1.0]], dtype=torch.float64))


def test_class_coverage_of_a_class_nobody_holds_is_zero():
    # Prepare
    counts = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    # Execute
    coverage = class_coverage(counts)
    # Assert
    assert torch.equal(coverage, torch.tensor([[0.5, 0.0], [0.5, 0.0]], dtype=torch.float64))


def test_teachers_vote_on_a_class_with_their_share_of_its_examples():
    # Prepare: mass of class 0 = 0.75 * 0.8 + 0.25 * 0.4 = 0.7; of class 1 = 1 * 0.6
    # Execute
    soft = coverage_consensus(LOGITS, COUNTS, temperature=1.0)
    # Assert: (0.7, 0.6) / 1.3
    assert torch.allclose(soft, torch.tensor([[0.7 / 1.3, 0.6 / 1.3]]))


def test_a_teacher_that_never_saw_a_class_has_no_say_on_it():
    # Prepare: teacher 1 (the only one with class 1) is gated out
    # Execute
    soft = coverage_consensus(LOGITS, COUNTS, 1.0, client_weights=torch.tensor([1.0, 0.0]))
    # Assert: class 1 gets no mass although teacher 0 gives it 0.2
    assert torch.allclose(soft, torch.tensor([[1.0, 0.0]]))


def test_consensus_mode_coverage_is_the_class_vote():
    # Prepare: as above, (0.7, 0.6) / 1.3
    # Execute
    soft = consensus(LOGITS, "coverage", 1.0, class_counts=COUNTS)
    # Assert
    assert torch.allclose(soft, torch.tensor([[0.7 / 1.3, 0.6 / 1.3]]))


def test_consensus_mode_coverage_era_sharpens_the_class_vote_at_one_tenth():
    # Prepare: softmax((0.53846, 0.46154) / 0.1) = 1 / (1 + e^-0.76923) = 0.68336
    # Execute
    soft = consensus(LOGITS, "coverage-era", 1.0, class_counts=COUNTS)
    # Assert
    assert torch.allclose(soft, torch.tensor([[0.68336, 0.31664]]), atol=1e-5)


def test_the_student_adds_its_probabilities_times_its_confidence():
    # Prepare: the reference says (0.5, 0.5), confidence 0.5: adds (0.25, 0.25)
    reference = torch.zeros(1, 2)
    # Execute
    soft = coverage_consensus(LOGITS, COUNTS, 1.0, reference=reference)
    # Assert: (0.95, 0.85) / 1.8
    assert torch.allclose(soft, torch.tensor([[0.95 / 1.8, 0.85 / 1.8]]))


def test_gate_weights_judge_a_teacher_on_the_classes_the_student_predicts():
    # Prepare: the student predicts class 0 for sample 0 and class 1 for sample 1
    reference = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
    # Execute
    weights = coverage_gate_weights(COUNTS, reference)
    # Assert: (N, B) = coverage[:, (0, 1)]
    assert torch.allclose(weights, torch.tensor([[0.75, 0.0], [0.25, 1.0]]))


@pytest.mark.parametrize(
    ("counts", "message"),
    [
        (torch.zeros(0, 2), "shape \\(N clients, K classes\\)"),
        (torch.tensor([[1.0, -1.0]]), "finite and non-negative"),
        (torch.tensor([[1.0, float("nan")]]), "finite and non-negative"),
    ],
)
def test_class_coverage_rejects_bad_counts(counts, message):
    with pytest.raises(ValueError, match=message):
        class_coverage(counts)


def test_consensus_rejects_logits_that_are_not_three_dimensional():
    with pytest.raises(ValueError, match="logits must have shape \\(N, B, K\\)"):
        coverage_consensus(torch.zeros(2, 2), COUNTS, 1.0)


def test_consensus_rejects_counts_of_another_shape_than_the_logits():
    with pytest.raises(ValueError, match="class_counts must have shape \\(N, K\\) = \\(2, 2\\)"):
        coverage_consensus(LOGITS, torch.ones(3, 2), 1.0)


def test_consensus_rejects_non_finite_logits():
    logits = LOGITS.clone()
    logits[0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="logits contain NaN or inf"):
        coverage_consensus(logits, COUNTS, 1.0)


def test_consensus_rejects_a_gate_outside_zero_one():
    with pytest.raises(ValueError, match="client_weights must be \\(2,\\) in \\[0, 1\\]"):
        coverage_consensus(LOGITS, COUNTS, 1.0, client_weights=torch.tensor([1.5, 0.0]))


def test_consensus_rejects_a_reference_of_another_shape():
    with pytest.raises(ValueError, match="reference must have shape \\(B, K\\) = \\(1, 2\\)"):
        coverage_consensus(LOGITS, COUNTS, 1.0, reference=torch.zeros(2, 2))


def test_consensus_rejects_a_non_finite_reference():
    with pytest.raises(ValueError, match="reference logits contain NaN or inf"):
        coverage_consensus(LOGITS, COUNTS, 1.0, reference=torch.tensor([[float("nan"), 0.0]]))


def test_consensus_without_any_voice_is_refused():
    with pytest.raises(ValueError, match="the consensus is empty"):
        coverage_consensus(LOGITS, COUNTS, 1.0, client_weights=torch.zeros(2))


def test_consensus_mode_coverage_without_class_counts_is_refused():
    with pytest.raises(ValueError, match="mode 'coverage' needs class_counts of shape \\(N, K\\)"):
        consensus(LOGITS, "coverage", 1.0)


def test_gate_weights_reject_a_reference_with_another_class_count():
    with pytest.raises(ValueError, match="reference must have shape \\(B, K=2\\)"):
        coverage_gate_weights(COUNTS, torch.zeros(1, 3))
