"""Label-skew rows of `feddistill bench fed --regime label-skew` (issue 10, part 5).

The regime: MNIST-5k, 10 clients, Dirichlet(alpha = 0.1) label skew, 20 rounds,
`cnn-small` student, each strategy over several seeds (default 0,1,2), in process
(`--engine inprocess` runs the same ServerApp / ClientApp code without Ray). The
table gives mean +- sample std of the final accuracy per strategy; the target is
feddistill >= FedAvg.

Usage: python benchmarks/fed_mnist5k.py --regime label-skew [--seeds 0,1,2] [--only a,b]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from feddistill.seeds import format_mean_std

# the split: each client holds a few classes
LABEL_SKEW = (
    "partitioner='dirichlet'",
    "dirichlet-alpha=0.1",
    "num-partitions=10",
)
LABEL_SKEW_ROUNDS = 20
LABEL_SKEW_STRATEGIES = ("feddistill", "fedavg")


def seed_table(results: Sequence[dict[str, Any]]) -> str:
    """Markdown: one row per strategy with its seeds and mean +- std final accuracy.

    Args:
        results: one dict per run with ``name``, ``seed`` and ``final_accuracy`` (in
            [0, 1]); runs of one strategy are grouped in first-seen order.

    Returns:
        The table, ending with a newline.
    """
    by_name: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        by_name.setdefault(r["name"], []).append(r)
    lines = [
        "| strategy | seeds | final acc mean ± std (%) | per seed (%) |",
        "|---|---|---|---|",
    ]
    for name, runs in by_name.items():
        accs = [float(r["final_accuracy"]) for r in runs]
        seeds = ",".join(str(r["seed"]) for r in runs)
        per_seed = ", ".join(f"{100 * a:.1f}" for a in accs)
        lines.append(f"| {name} | {seeds} | {format_mean_std(accs)} | {per_seed} |")
    return "\n".join(lines) + "\n"
