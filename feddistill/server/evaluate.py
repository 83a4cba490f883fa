"""Server-side evaluation of the global student: overall and per domain."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from feddistill.clients.train import predict_logits


def evaluate_by_domain(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    domains: np.ndarray,
    device: torch.device,
    target_domains: tuple[int, ...] = (),
) -> dict[str, float]:
    """Accuracy and loss on (x, y), plus accuracy per domain and the worst domain's.

    Args:
        model: the global student.
        x: test inputs (n, C, H, W); y: labels (n,).
        domains: domain id of each test sample, shape (n,).
        device: where to compute.
        target_domains: domain ids held out of training; when given, also
            ``source_accuracy`` (test samples of the other domains) and
            ``target_accuracy`` (of these domains: the cross-domain headline metric).

    Returns:
        ``accuracy``, ``loss``, ``domain_<d>_accuracy`` for each domain present,
        ``worst_domain_accuracy``, and with `target_domains` ``source_accuracy`` and
        ``target_accuracy`` (nan when a side has no test sample).
    """
    logits = predict_logits(model, x, device)
    correct = (logits.argmax(dim=1) == y).numpy()
    out = {"accuracy": float(correct.mean()), "loss": float(F.cross_entropy(logits, y))}
    per = {}
    for d in sorted(set(int(v) for v in domains)):
        per[d] = float(correct[domains == d].mean())
        out[f"domain_{d}_accuracy"] = per[d]
    out["worst_domain_accuracy"] = min(per.values()) if per else out["accuracy"]
    if target_domains:
        is_target = np.isin(domains, np.asarray(target_domains))
        for key, mask in (("source_accuracy", ~is_target), ("target_accuracy", is_target)):
            out[key] = float(correct[mask].mean()) if mask.any() else float("nan")
    return out
