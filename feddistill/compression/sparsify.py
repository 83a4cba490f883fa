"""Magnitude top-k sparsification; error feedback is kept by the caller.

With error feedback the residual ``e`` (what was not sent, plus the quantization error)
is added to the next update before it is sparsified::

    acc = update + e;  sent = Q(topk(acc));  e' = acc - sent

so nothing is lost, only delayed (Stich & Karimireddy show this keeps SGD's rate).

References:
    DGC, Lin et al., arXiv:1712.01887.
    EF-SGD, Karimireddy et al., arXiv:1901.09847.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def check_density(density: float) -> None:
    """Raise ``ValueError`` unless ``density`` is a number in (0, 1].

    Raises:
        ValueError: naming the value and the allowed range.
    """
    if isinstance(density, bool) or not isinstance(density, int | float):
        raise ValueError(f"density must be a float in (0, 1], got {density!r}")
    if not 0.0 < float(density) <= 1.0:
        raise ValueError(f"density must be in (0, 1], got {density!r}")


def check_k(k: int | None) -> None:
    """Raise ``ValueError`` unless ``k`` is None or an int >= 1.

    Raises:
        ValueError: naming the value and the allowed range.
    """
    if k is None:
        return
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be None or an int >= 1, got {k!r}")


def num_kept(numel: int, density: float = 1.0, k: int | None = None) -> int:
    """Number of entries top-k keeps in a tensor of ``numel`` entries.

    Args:
        numel: tensor size, >= 0.
        density: fraction of entries kept, in (0, 1]; ``ceil(density * numel)``, at
            least 1 when ``numel > 0``.
        k: exact count; overrides ``density``; capped at ``numel``.

    Returns:
        An int in ``[min(1, numel), numel]``.

    Raises:
        ValueError: if ``density`` is outside (0, 1] or ``k`` is not an int >= 1.
    """
    check_density(density)
    check_k(k)
    if numel == 0:
        return 0
    if k is not None:
        return min(k, numel)
    return min(numel, max(1, math.ceil(float(density) * numel - 1e-9)))


def topk_indices(x: Tensor, kept: int) -> Tensor:
    """Flat indices of the ``kept`` largest ``|x|``, sorted ascending.

    Args:
        x: any shape; ranked by absolute value over all entries (ties: any order).
        kept: number of indices, in ``[0, x.numel()]``.

    Returns:
        int64 tensor, shape (kept,), strictly increasing.

    References:
        DGC, arXiv:1712.01887.
    """
    flat = x.reshape(-1)
    if kept >= flat.numel():
        return torch.arange(flat.numel(), dtype=torch.int64)
    _, idx = torch.topk(flat.abs(), kept, sorted=False)
    return torch.sort(idx).values
