"""Several seeds of one experiment: parse ``--seeds``, aggregate mean and standard deviation."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence


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


# What `feddistill run --seeds` aggregates from each seed's summary.json: key, label, unit
# scale and digits. A key missing from a summary (target accuracy without target domains)
# is left out of the table.
RUN_METRICS: tuple[tuple[str, str, float, int], ...] = (
    ("final_accuracy", "final accuracy (%)", 100.0, 2),
    ("best_accuracy", "best accuracy (%)", 100.0, 2),
    ("final_worst_domain_accuracy", "worst-domain accuracy (%)", 100.0, 2),
    ("final_target_accuracy", "target accuracy (%)", 100.0, 2),
    ("final_source_accuracy", "source accuracy (%)", 100.0, 2),
    ("uplink_bytes", "uplink (MB)", 1e-6, 3),
    ("downlink_bytes", "downlink (MB)", 1e-6, 3),
    ("wall_seconds", "wall time (s)", 1.0, 1),
)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def aggregate(per_seed: Mapping[int, Mapping[str, object]], keys: Sequence[str]) -> dict:
    """Mean, sample standard deviation and per-seed values of each key, over seeds.

    Args:
        per_seed: seed -> that seed's numbers (e.g. a run's summary.json).
        keys: the keys to aggregate; a key is kept only if every seed has a finite
            number for it (bools and None do not count).

    Returns:
        ``{key: {"mean": m, "std": s, "values": [v per seed, in seed order]}}``.

    Raises:
        ValueError: if `per_seed` is empty.
    """
    if not per_seed:
        raise ValueError("aggregate needs at least one seed's results, got none")
    seeds = sorted(per_seed)
    out: dict[str, dict] = {}
    for key in keys:
        values = [per_seed[s].get(key) for s in seeds]
        if all(_is_number(v) for v in values):
            numbers = [float(v) for v in values]  # type: ignore[arg-type]
            mean, std = mean_std(numbers)
            out[key] = {"mean": mean, "std": std, "values": numbers}
    return out


def numeric_leaves(obj: object, prefix: str = "") -> dict[str, float]:
    """Every finite number in a JSON value, keyed by its path (for any benchmark's results).

    Dict keys join with ``.``; a list item is named by its first string field among
    ``label, name, setting, strategy, method, engine`` when it is a dict that has one, else by
    its index (``[3]``). Bools are not numbers here.

    Example: ``{"rows": [{"name": "a", "acc": 0.9}]}`` -> ``{"rows.a.acc": 0.9}``.
    """
    out: dict[str, float] = {}
    if _is_number(obj):
        out[prefix] = float(obj)  # type: ignore[arg-type]
    elif isinstance(obj, dict):
        for key, value in obj.items():
            out.update(numeric_leaves(value, f"{prefix}.{key}" if prefix else str(key)))
    elif isinstance(obj, list):
        for i, item in enumerate(obj):
            label = f"[{i}]"
            if isinstance(item, dict):
                for field in ("label", "name", "setting", "strategy", "method", "engine"):
                    if isinstance(item.get(field), str):
                        label = str(item[field])
                        break
            out.update(numeric_leaves(item, f"{prefix}.{label}" if prefix else label))
    return out


def seeds_markdown(
    title: str,
    seeds: Sequence[int],
    aggregated: Mapping[str, Mapping],
    labels: Mapping[str, tuple[str, float, int]] | None = None,
) -> str:
    """A table: one line per quantity, ``mean ± std`` then each seed's value.

    Args:
        title: the heading line.
        seeds: the seeds, in the order of each quantity's ``values``.
        aggregated: as returned by :func:`aggregate`.
        labels: key -> (label, scale, digits after the point); a key without one is
            shown as it is, its numbers with 4 significant digits.

    Returns:
        Markdown text ending in a newline.
    """
    if not seeds:
        return f"{title}\n\nNo seed completed.\n"
    labels = labels or {}
    rows = []
    for key, agg in aggregated.items():
        label, scale, digits = labels.get(key, (key, 1.0, -1))

        def fmt(v: float, scale: float = scale, digits: int = digits) -> str:
            return f"{scale * v:.{digits}f}" if digits >= 0 else f"{scale * v:.4g}"

        cells = " | ".join(fmt(v) for v in agg["values"])
        label = label.replace("|", "\\|")  # a path may hold "|" (robustness keys)
        rows.append(f"| {label} | {fmt(agg['mean'])} ± {fmt(agg['std'])} | {cells} |")
    head = "| quantity | mean ± std | " + " | ".join(f"seed {s}" for s in seeds) + " |"
    return "\n".join([title, "", head, "|" + "---|" * (len(seeds) + 2), *rows, ""])
