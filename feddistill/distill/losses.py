"""Knowledge-distillation losses on soft labels (Hinton et al., arXiv:1503.02531)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

# Rows of `target_probs` must sum to 1 within this absolute tolerance.
_ROW_SUM_ATOL = 1e-3


def _check_temperature(temperature: float) -> None:
    if not temperature > 0 or not torch.isfinite(torch.tensor(float(temperature))):
        raise ValueError(f"temperature must be a finite float > 0, got {temperature!r}")


def soft_labels(logits: Tensor, temperature: float) -> Tensor:
    """Tempered softmax of teacher logits: ``softmax(logits / T)`` over the last axis.

    Args:
        logits: teacher logits, shape (..., K classes).
        temperature: softmax temperature T > 0; T > 1 softens the distribution.

    Returns:
        Probabilities with the shape of ``logits``; each row (last axis) sums to 1.

    Raises:
        ValueError: if T <= 0 (or not finite) or ``logits`` has no class axis.

    References:
        Hinton, Vinyals and Dean, "Distilling the Knowledge in a Neural Network",
        arXiv:1503.02531.
    """
    _check_temperature(temperature)
    if logits.dim() < 1 or logits.shape[-1] < 1:
        raise ValueError(f"logits must have a class axis of size >= 1, got {tuple(logits.shape)}")
    return torch.softmax(logits.float() / temperature, dim=-1)


def kd_loss(student_logits: Tensor, target_probs: Tensor, temperature: float) -> Tensor:
    """Distillation loss ``T^2 * KL(target || softmax(student / T))``, batch-mean.

    The KL divergence is summed over classes and averaged over the batch (PyTorch's
    ``reduction="batchmean"``, the mathematically correct KL; ``"mean"`` would also
    divide by K). Scaling by T^2 keeps gradient magnitudes comparable across
    temperatures. Zero target probabilities contribute 0 (``0 * log 0 = 0``). The
    divergence is computed in float64 on renormalised target rows and clamped at 0 per
    sample, so it is never negative and is 0 (within 1e-7) for identical distributions.

    Args:
        student_logits: student logits, shape (B, K).
        target_probs: soft labels, shape (B, K), already tempered (e.g. from
            :func:`soft_labels` or a consensus); non-negative, each row sums to 1.
        temperature: softmax temperature T > 0 applied to the student.

    Returns:
        Scalar loss tensor (differentiable w.r.t. ``student_logits``).

    Raises:
        ValueError: if the shapes differ or are not (B, K) with B >= 1, T <= 0, or
            ``target_probs`` is negative, non-finite, or has a row not summing to 1.

    References:
        Hinton, Vinyals and Dean, arXiv:1503.02531.
    """
    _check_temperature(temperature)
    if student_logits.dim() != 2 or student_logits.shape[0] < 1:
        raise ValueError(
            f"student_logits must be (B, K) with B >= 1, got {tuple(student_logits.shape)}"
        )
    if target_probs.shape != student_logits.shape:
        raise ValueError(
            f"target_probs shape {tuple(target_probs.shape)} must equal student_logits "
            f"shape {tuple(student_logits.shape)}"
        )
    target = target_probs.detach().to(student_logits.device, torch.float32)
    if not torch.isfinite(target).all() or (target < 0).any():
        raise ValueError("target_probs must be finite and non-negative")
    row_err = (target.sum(dim=1) - 1).abs().max().item()
    if row_err > _ROW_SUM_ATOL:
        raise ValueError(
            f"target_probs rows must sum to 1 (max deviation {row_err:.3g} > {_ROW_SUM_ATOL}); "
            "pass probabilities, e.g. soft_labels(teacher_logits, T), not logits"
        )
    # float64 and renormalised rows: KL(q || p) = sum q (log q - log p) is then >= 0 up
    # to ~1e-15 (the first-order rounding term sum(q * eps) cancels when sum(q) == 1);
    # the clamp removes what is left, so identical logits give exactly 0, never < 0.
    q = target.double()
    q = q / q.sum(dim=1, keepdim=True)
    log_p = F.log_softmax(student_logits.double() / temperature, dim=1)
    kl = (torch.xlogy(q, q) - q * log_p).sum(dim=1).clamp_min(0.0)  # (B,)
    return (kl.mean() * temperature**2).to(student_logits.dtype)
