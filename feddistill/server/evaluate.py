"""Server-side evaluation of the global student: overall and per domain."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from feddistill.clients.train import predict_logits


def evaluate_by_domain(
    model: nn.Module, x: Tensor, y: Tensor, domains: np.ndarray, device: torch.device
) -> dict[str, float]:
    """Accuracy and loss on (x, y), plus accuracy per domain and the worst domain's.

    Args:
        model: the global student.
        x: test inputs (n, C, H, W); y: labels (n,).
        domains: domain id of each test sample, shape (n,).
        device: where to compute.

    Returns:
        ``accuracy``, ``loss``, ``domain_<d>_accuracy`` for each domain present and
        ``worst_domain_accuracy``.
    """
    logits = predict_logits(model, x, device)
    correct = (logits.argmax(dim=1) == y).numpy()
    out = {"accuracy": float(correct.mean()), "loss": float(F.cross_entropy(logits, y))}
    per = {}
    for d in sorted(set(int(v) for v in domains)):
        per[d] = float(correct[domains == d].mean())
        out[f"domain_{d}_accuracy"] = per[d]
    out["worst_domain_accuracy"] = min(per.values()) if per else out["accuracy"]
    return out
