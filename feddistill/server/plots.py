"""One run's plots, readable without the CSV: titled, with a line describing the run.

- ``accuracy_vs_round.png``: overall, worst-domain and per-domain test accuracy;
- ``accuracy_vs_uplink.png``: accuracy vs cumulative uplink and total (up + down) bytes;
- ``bytes_vs_round.png``: cumulative uplink, downlink and total bytes per round.

The byte plots are skipped when nothing is sent (the centralized baseline).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

MB = 1e6


def describe_run(config: Mapping[str, Any]) -> str:
    """One line that says what was run, from the kebab-case config.

    Args:
        config: the run config (``summary["config"]``).

    Returns:
        e.g. ``digits, 4 clients (kmeans), teachers cnn -> student cnn-small,
        update top-5% 4-bit, logits 4-bit, seed 0``; the compression part is left out
        for strategies that send no compressed update.
    """
    parts = [str(config.get("dataset", "?"))]
    partitioner = str(config.get("partitioner", "?"))
    if partitioner == "dirichlet":
        partitioner += f", alpha={config.get('dirichlet-alpha')}"
    strategy = config.get("strategy")
    if strategy == "centralized":
        parts.append(f"one model {config.get('student-model')}")
    else:
        parts.append(f"{config.get('num-partitions')} clients ({partitioner})")
        if strategy in ("feddistill", "fedmd"):
            parts.append(
                f"teachers {config.get('teacher-models')} -> student {config.get('student-model')}"
            )
        else:
            parts.append(f"model {config.get('student-model')}")
        if strategy in ("feddistill", "fedavg-compressed"):
            density = 100 * float(config.get("update-density", 1.0))
            parts.append(f"update top-{density:g}% {config.get('update-bit-width')}-bit")
        if strategy in ("feddistill", "fedmd"):
            parts.append(f"logits {config.get('logits-bit-width')}-bit")
    parts.append(f"seed {config.get('seed')}")
    return ", ".join(parts)


def domain_keys(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """``domain_<d>_accuracy`` keys present in `rows`, ordered by domain id."""
    keys = {k for row in rows for k in row if k.startswith("domain_") and k.endswith("_accuracy")}
    return sorted(keys, key=lambda k: int(k.split("_")[1]))


def readable_log_axis(axis: Any) -> None:
    """Log scale on `axis` with ticks at 1, 2, 5 x 10^k labelled as plain numbers."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis.axes.set_xscale("log") if axis.axis_name == "x" else axis.axes.set_yscale("log")
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axis.set_minor_formatter(NullFormatter())


def _figure(title: str, description: str) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    fig.suptitle(title, fontsize=12, fontweight="bold", x=0.02, ha="left")
    ax.set_title(description, fontsize=8.5, loc="left", color="dimgray")
    ax.grid(True, alpha=0.3)
    return fig, ax


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_run(
    out_dir: Path, rows: Sequence[Mapping[str, Any]], summary: Mapping[str, Any]
) -> list[Path]:
    """Write the run's plots (see the module docstring) into `out_dir`.

    Args:
        out_dir: the run's out-dir.
        rows: the metrics rows, one per round (``round``, ``accuracy``,
            ``worst_domain_accuracy``, ``domain_<d>_accuracy``, cumulative bytes).
        summary: the run's summary (``strategy``, ``config``).

    Returns:
        The PNG paths written.
    """
    config = summary.get("config", {})
    name = f"{summary.get('strategy')} on {config.get('dataset')}"
    description = describe_run(config)
    rounds = [r["round"] for r in rows]
    paths = []

    fig, ax = _figure(f"{name}: test accuracy per round", description)
    ax.plot(
        rounds, [100 * r["accuracy"] for r in rows], "o-", lw=2.2, color="black", label="overall"
    )
    if any("worst_domain_accuracy" in r for r in rows):
        ax.plot(
            rounds,
            [100 * r.get("worst_domain_accuracy", float("nan")) for r in rows],
            "s--",
            lw=1.8,
            color="tab:red",
            label="worst domain",
        )
    import matplotlib

    keys = domain_keys(rows)
    colours = matplotlib.colormaps["viridis"]  # no red: red is the worst domain
    for i, key in enumerate(keys):
        ax.plot(
            rounds,
            [100 * r.get(key, float("nan")) for r in rows],
            lw=0.9,
            alpha=0.7,
            color=colours(i / max(1, len(keys) - 1) * 0.9),
            label=f"domain {key.split('_')[1]}",
        )
    ax.set_xlabel("round")
    ax.set_ylabel("test accuracy (%)")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    paths.append(_save(fig, out_dir / "accuracy_vs_round.png"))

    if not any(r.get("cumulative_uplink_bytes", 0) > 0 for r in rows):
        return paths  # nothing sent: no byte plots
    up = [r.get("cumulative_uplink_bytes", 0) / MB for r in rows]
    down = [r.get("cumulative_downlink_bytes", 0) / MB for r in rows]
    total = [u + d for u, d in zip(up, down, strict=True)]
    acc = [100 * r["accuracy"] for r in rows]

    fig, ax = _figure(f"{name}: accuracy vs bytes sent", description)
    ax.plot(up, acc, "o-", label="vs cumulative uplink (clients -> server)")
    ax.plot(total, acc, "s--", label="vs cumulative uplink + downlink")
    readable_log_axis(ax.xaxis)
    ax.set_xlabel("cumulative MB sent, all clients (log scale)")
    ax.set_ylabel("test accuracy (%)")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)
    paths.append(_save(fig, out_dir / "accuracy_vs_uplink.png"))

    fig, ax = _figure(f"{name}: bytes sent per round (cumulative)", description)
    ax.plot(rounds, total, "o-", color="black", lw=2, label="total")
    ax.plot(rounds, down, "s--", label="downlink (server -> clients)")
    ax.plot(rounds, up, "^-", label="uplink (clients -> server)")
    readable_log_axis(ax.yaxis)
    ax.set_xlabel("round")
    ax.set_ylabel("cumulative MB, all clients (log scale)")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3, frameon=False)
    paths.append(_save(fig, out_dir / "bytes_vs_round.png"))
    return paths
