"""A seeded per-round subset of the proxy set: cheaper logits, no indices on the wire.

Server and clients draw the same subset from ``(seed, round)``, so teacher logits
(round r) and the consensus built from them (sent in round r + 1) cover only those
rows and no index list travels.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def subset_rows(proxy_x: Tensor, idx: Tensor) -> Tensor:
    """``proxy_x[idx]``, or `proxy_x` itself (no copy) when `idx` keeps every row."""
    return proxy_x if len(idx) == len(proxy_x) else proxy_x[idx]


def proxy_subset(num_proxy: int, fraction: float, seed: int, server_round: int) -> Tensor:
    """Sorted indices of the proxy samples used in `server_round`.

    Args:
        num_proxy: proxy samples B >= 1.
        fraction: share kept, in (0, 1]; ``max(1, round(fraction * B))`` samples.
            1.0 keeps every sample (``arange(B)``).
        seed: the run's seed.
        server_round: the round, from 1.

    Returns:
        int64 indices, shape (b,), ascending.

    Raises:
        ValueError: if `fraction` is outside (0, 1] or `num_proxy` < 1 (named).
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"logits-subset={fraction} is out of range; allowed: (0.0, 1.0]")
    if num_proxy < 1:
        raise ValueError(f"num_proxy must be >= 1, got {num_proxy}")
    if fraction == 1.0:
        return torch.arange(num_proxy)
    size = max(1, round(fraction * num_proxy))
    rng = np.random.default_rng([seed, server_round, 7919])
    return torch.as_tensor(np.sort(rng.choice(num_proxy, size=size, replace=False)))
