"""Tests of feddistill.distill.losses: soft_labels and kd_loss."""

import math

import pytest
import torch

from feddistill.distill import kd_loss, soft_labels


def test_soft_labels_is_tempered_softmax() -> None:
    # Prepare: logits [2 ln 3, 0] at T=2 -> softmax([ln 3, 0]) = [3/4, 1/4]
    logits = torch.tensor([[2 * math.log(3.0), 0.0]])

    # Execute
    probs = soft_labels(logits, temperature=2.0)

    # Assert
    torch.testing.assert_close(probs, torch.tensor([[0.75, 0.25]]))


def test_soft_labels_keeps_shape() -> None:
    # Prepare
    logits = torch.randn(3, 5, 7)

    # Execute
    probs = soft_labels(logits, 4.0)

    # Assert
    assert probs.shape == (3, 5, 7)
    torch.testing.assert_close(probs.sum(-1), torch.ones(3, 5))


def test_kd_loss_batchmean_at_t1() -> None:
    # Prepare: student [0, 0] -> p = [1/2, 1/2]; teacher [2, 0] -> q = [e^2, 1] / (e^2 + 1)
    # = [0.880797, 0.119203]. KL(q || p) = 0.880797 ln(0.880797/0.5) + 0.119203
    # ln(0.119203/0.5) = 0.880797 * 0.566219 + 0.119203 * (-1.433781) = 0.498729 - 0.170911
    # = 0.327818; batchmean divides by B = 1. ('mean' would divide by B*K = 2: 0.1639.)
    student = torch.tensor([[0.0, 0.0]])
    target = soft_labels(torch.tensor([[2.0, 0.0]]), 1.0)

    # Execute
    loss = kd_loss(student, target, temperature=1.0)

    # Assert
    assert loss.item() == pytest.approx(0.327818, abs=1e-5)


def test_kd_loss_scaled_by_t_squared_at_t4() -> None:
    # Prepare: at T=4, q = softmax([0.5, 0]) = [0.622459, 0.377541], p = [1/2, 1/2].
    # KL = 0.622459 ln(1.244919) + 0.377541 ln(0.755081) = 0.622459 * 0.219070
    # + 0.377541 * (-0.280930) = 0.136362 - 0.106063 = 0.030299; times T^2 = 16: 0.48478.
    student = torch.tensor([[0.0, 0.0]])
    target = soft_labels(torch.tensor([[2.0, 0.0]]), 4.0)

    # Execute
    loss = kd_loss(student, target, temperature=4.0)

    # Assert
    assert loss.item() == pytest.approx(0.48478, abs=1e-4)


def test_kd_loss_averages_over_batch() -> None:
    # Prepare: the T=1 example plus a row whose student equals its target (KL = 0):
    # batchmean = (0.327818 + 0) / 2 = 0.163909.
    student = torch.tensor([[0.0, 0.0], [1.0, -1.0]])
    target = torch.cat(
        [
            soft_labels(torch.tensor([[2.0, 0.0]]), 1.0),
            soft_labels(torch.tensor([[1.0, -1.0]]), 1.0),
        ]
    )

    # Execute
    loss = kd_loss(student, target, 1.0)

    # Assert
    assert loss.item() == pytest.approx(0.163909, abs=1e-5)


def test_kd_loss_one_hot_target_is_finite() -> None:
    # Prepare: a zero target probability contributes 0 * log 0 = 0; loss = -log p_0 = ln 2
    student = torch.tensor([[0.0, 0.0]], requires_grad=True)
    target = torch.tensor([[1.0, 0.0]])

    # Execute
    loss = kd_loss(student, target, 1.0)
    loss.backward()

    # Assert
    assert loss.item() == pytest.approx(math.log(2.0), abs=1e-6)
    assert student.grad is not None and torch.isfinite(student.grad).all()


@pytest.mark.parametrize("temperature", [0.0, -1.0, float("nan")])
def test_soft_labels_rejects_bad_temperature(temperature: float) -> None:
    with pytest.raises(ValueError, match="temperature"):
        soft_labels(torch.zeros(1, 2), temperature)


def test_soft_labels_rejects_scalar_logits() -> None:
    with pytest.raises(ValueError, match="class axis"):
        soft_labels(torch.tensor(1.0), 1.0)


def test_kd_loss_rejects_bad_temperature() -> None:
    with pytest.raises(ValueError, match="temperature"):
        kd_loss(torch.zeros(1, 2), torch.full((1, 2), 0.5), 0.0)


@pytest.mark.parametrize("student_shape", [(2,), (0, 2), (1, 2, 2)])
def test_kd_loss_rejects_non_batch_student(student_shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="student_logits must be"):
        kd_loss(torch.zeros(student_shape), torch.zeros(student_shape), 1.0)


def test_kd_loss_rejects_shape_mismatch() -> None:
    with pytest.raises(ValueError, match="target_probs shape"):
        kd_loss(torch.zeros(2, 3), torch.full((2, 2), 0.5), 1.0)


@pytest.mark.parametrize(
    "target", [torch.tensor([[1.5, -0.5]]), torch.tensor([[float("nan"), 0.5]])]
)
def test_kd_loss_rejects_negative_or_non_finite_target(target: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="finite and non-negative"):
        kd_loss(torch.zeros(1, 2), target, 1.0)


def test_kd_loss_rejects_logits_passed_as_target() -> None:
    with pytest.raises(ValueError, match="sum to 1"):
        kd_loss(torch.zeros(1, 2), torch.tensor([[2.0, 0.0]]), 1.0)


def test_kd_loss_of_identical_logits_is_zero_not_negative() -> None:
    # Prepare: the input (was -3.9e-8 with F.kl_div in float32).
    torch.manual_seed(0)
    s = torch.randn(32, 10)

    # Execute
    loss = kd_loss(s, soft_labels(s, 2.0), 2.0).item()

    # Assert
    assert 0.0 <= loss <= 1e-7


@pytest.mark.parametrize("scale", [0.1, 1.0, 10.0, 100.0])
@pytest.mark.parametrize("temperature", [0.5, 1.0, 4.0])
def test_kd_loss_of_identical_logits_is_zero_at_any_scale(scale: float, temperature: float) -> None:
    # Prepare: large logits made float32 KL drift to -4.2e-5 / +7.4e-5.
    s = torch.randn(64, 10, generator=torch.Generator().manual_seed(3)) * scale

    # Execute
    loss = kd_loss(s, soft_labels(s, temperature), temperature).item()

    # Assert
    assert 0.0 <= loss <= 1e-7
