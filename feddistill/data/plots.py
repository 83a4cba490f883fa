"""Plots of the data of a run (matplotlib, imported on first use)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def save_plot(counts: np.ndarray, path: Path, title: str) -> None:
    """Stacked bars of samples per class for each partition, written as a PNG.

    Args:
        counts: samples per class, shape (num_partitions, K).
        path: the PNG file to write.
        title: the figure title.
    """
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    num_partitions, num_classes = counts.shape
    fig = Figure(figsize=(max(4.0, 0.5 * num_partitions + 2.0), 3.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ids = np.arange(num_partitions)
    bottom = np.zeros(num_partitions)
    cmap = matplotlib.colormaps["tab10" if num_classes <= 10 else "tab20"]
    for c in range(num_classes):
        ax.bar(ids, counts[:, c], bottom=bottom, color=cmap(c % cmap.N), label=str(c), width=0.8)
        bottom += counts[:, c]
    ax.set_xlabel("partition (client) id")
    ax.set_ylabel("samples")
    ax.set_title(title)
    if num_partitions <= 40:
        ax.set_xticks(ids)
    ax.legend(title="class", fontsize="small", loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=120, metadata={"Software": None})
