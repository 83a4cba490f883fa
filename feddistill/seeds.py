"""Several seeds of one experiment: parse ``--seeds``, aggregate mean and standard deviation."""

from __future__ import annotations

import math
from collections.abc import Sequence


def parse_seeds(text: str) -> list[int]:
    """``"0,1,2"`` -> ``[0, 1, 2]``; ``"3"`` -> ``[3]``.

    Raises:
        ValueError: if an item is not an integer >= 0, a seed repeats, or none is given.
    """
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"--seeds must be a comma list of integers >= 0, got {text!r}") from None
    if not seeds or any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise ValueError(
            f"--seeds must be a non-empty comma list of distinct integers >= 0, got {text!r}"
        )
    return seeds


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1 in the denominator; 0 for one value).

    Raises:
        ValueError: if `values` is empty.
    """
    if not values:
        raise ValueError("mean_std needs at least one value, got none")
    n = len(values)
    mean = sum(values) / n
    if n == 1:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


def format_mean_std(values: Sequence[float], scale: float = 100.0, digits: int = 1) -> str:
    """``"91.2 ± 0.8"`` for accuracies in [0, 1] (scaled to percent by default)."""
    mean, std = mean_std(values)
    return f"{scale * mean:.{digits}f} ± {scale * std:.{digits}f}"
